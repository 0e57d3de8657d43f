// etcd's server command, as go.etcd.io/etcd/server/v3's own main.go has it: the published
// server module holds the whole command in etcdmain, so this thin main is the only code here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
