//! What comes from the environment: `DOCKER_CONFIG`, credential helpers on `PATH`, and the
//! cache's default place. One test in its own binary, because it changes the process
//! environment.

use bale_bundler::images::registry::auth::DockerConfig;
use bale_bundler::images::Cache;
use base64::Engine;
use std::os::unix::fs::PermissionsExt;

#[test]
fn images_environment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("docker");
    std::fs::create_dir_all(&conf).expect("mkdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("carol:pw");
    std::fs::write(
        conf.join("config.json"),
        format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}}}},
               "credHelpers":{{"helped.example":"baletest"}}}}"#
        ),
    )
    .expect("write");
    // A credential helper the way docker runs them: `get`, the server on stdin, JSON out.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let helper = bin.join("docker-credential-baletest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\n\
         if [ \"$server\" = helped.example ]; then\n\
         printf '{\"ServerURL\":\"%s\",\"Username\":\"dave\",\"Secret\":\"s\"}' \"$server\"\n\
         else echo 'credentials not found in native keychain'; exit 1; fi\n",
    )
    .expect("write");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(dirs).expect("join"));
    std::env::set_var("DOCKER_CONFIG", &conf);
    std::env::set_var("XDG_CACHE_HOME", tmp.path().join("xdg"));

    let c = DockerConfig::load(None).expect("load");
    assert_eq!(c.path(), conf.join("config.json"));
    let got = c
        .credentials("127.0.0.1:5000")
        .expect("ok")
        .expect("credentials");
    assert_eq!((got.user.as_str(), got.pass.as_str()), ("carol", "pw"));
    let helped = c
        .credentials("helped.example")
        .expect("ok")
        .expect("from helper");
    assert_eq!((helped.user.as_str(), helped.pass.as_str()), ("dave", "s"));
    assert!(c.credentials("other.example").expect("ok").is_none());

    assert_eq!(Cache::default_dir(), tmp.path().join("xdg/bale/oci"));
    let cache = Cache::open(Cache::default_dir()).expect("open");
    assert_eq!(
        std::fs::read_to_string(cache.root().join("oci-layout")).expect("layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
}
