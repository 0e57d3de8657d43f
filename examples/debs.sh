# shellcheck shell=bash
# Debian packages for the examples, downloaded once into a cache outside the clone and only
# ever extracted (dpkg-deb -x), never installed. Sourced after scripts/lib.sh.
#   EXAMPLES_DEB_CACHE   ${BALE_EXAMPLES_CACHE:-/var/cache/bale-examples}, one directory per arch

EXAMPLES_DEB_CACHE="${BALE_EXAMPLES_CACHE:-/var/cache/bale-examples}"

# example_deb PKG ARCH: prints the path of PKG's .deb for the Debian architecture ARCH,
# downloading it when the cache has none.
example_deb() {
    local pkg="$1" arch="$2" dir f
    dir="$EXAMPLES_DEB_CACHE/$arch"
    mkdir -p "$dir"
    f="$(find "$dir" -maxdepth 1 -name "${pkg}_*_$arch.deb" 2>/dev/null | sort | head -n1)"
    if [ -z "$f" ]; then
        need_foreign_arch "$arch"
        say "apt-get download $pkg:$arch"
        # apt's sandbox user cannot write into a root-owned cache directory.
        if ! (cd "$dir" && apt-get -o APT::Sandbox::User=root download "$pkg:$arch" >/dev/null 2>&1); then
            apt-get update -qq >/dev/null 2>&1 || true # package lists may be missing on a new machine
            (cd "$dir" && apt-get -o APT::Sandbox::User=root download "$pkg:$arch" >/dev/null) ||
                die "cannot download the Debian package $pkg for $arch (check apt sources, or put the .deb in $dir)"
        fi
        f="$(find "$dir" -maxdepth 1 -name "${pkg}_*_$arch.deb" | sort | head -n1)"
    fi
    [ -n "$f" ] || die "no $pkg .deb for $arch in $dir"
    printf '%s\n' "$f"
}
