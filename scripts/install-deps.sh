#!/bin/sh
# Installs the Debian packages a make target needs, once.
# Usage: install-deps.sh GROUP...   (build, test, bench, demo, fuzz)
# As root it runs apt-get update + apt-get install for what is missing;
# otherwise it prints the command and fails.
set -eu

pkgs_build="gcc meson ninja-build pkg-config libcmocka-dev libjson-c-dev uuid-dev libfuse3-dev zlib1g-dev libnbd-dev libxxhash-dev libgnutls28-dev libzstd-dev libcurl4-gnutls-dev"
pkgs_test="qemu-utils libnbd-bin python3-libnbd nbdkit fio python3 fuse3 util-linux e2fsprogs xfsprogs qemu-system-common gnutls-bin"
pkgs_bench="qemu-utils qemu-system-common nbdkit fio libnbd-bin python3 gnutls-bin e2fsprogs"
pkgs_demo="qemu-utils libnbd-bin python3 fuse3 util-linux e2fsprogs"
pkgs_fuzz="clang libclang-rt-14-dev"

want=""
for group in "$@"; do
	case "$group" in
	build) want="$want $pkgs_build" ;;
	test) want="$want $pkgs_test" ;;
	bench) want="$want $pkgs_bench" ;;
	demo) want="$want $pkgs_demo" ;;
	fuzz) want="$want $pkgs_fuzz" ;;
	*) echo "install-deps.sh: unknown group '$group'" >&2; exit 2 ;;
	esac
done

missing=""
for p in $want; do
	case " $missing " in *" $p "*) continue ;; esac
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done

# The S3 store's tests run s3rver (npm). npm comes with the machine's nodejs
# where there is one (/usr/bin/npm; Debian's own npm package conflicts with
# it): Debian's nodejs and npm only where no npm is found.
case " $* " in
*" test "*)
	if ! command -v npm >/dev/null 2>&1; then
		for p in nodejs npm; do
			case " $missing " in *" $p "*) ;; *) missing="$missing $p" ;; esac
		done
	fi
	;;
esac

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages:$missing" >&2
	echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
	exit 1
fi

echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
