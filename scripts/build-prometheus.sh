#!/usr/bin/env bash
# Builds prometheus and promtool at the compose image's release (prom/prometheus:v3.14.0 is
# the Go module github.com/prometheus/prometheus v0.314.0) into .tools/prometheus-<release>/,
# once (about 5 minutes and 1 GB of Go modules on a fresh machine). Prints the directory.
# `go install module@version` refuses the module (its go.mod has a replace directive), so
# it is built as the main module from the proxy's source archive. The web UI's assets are
# not embedded (they need npm and the UI's build): the API, rules and TSDB are the image's.
set -euo pipefail
cd "$(dirname "$0")/.."

release=3.14.0
module=github.com/prometheus/prometheus
version=v0.${release%%.*}$(printf '%02d' "$(echo "$release" | cut -d. -f2)").$(echo "$release" | cut -d. -f3)
dest=.tools/prometheus-$release
if [ -x "$dest/prometheus" ] && [ -x "$dest/promtool" ]; then
  echo "$dest"
  exit 0
fi
export GOPATH=${GOPATH:-$PWD/.tools/go} GOFLAGS=-modcacherw GOWORK=off
echo "build-prometheus: building prometheus and promtool $release ($module $version)" >&2
source_dir=$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$source_dir" "$work/src" && chmod -R u+w "$work/src"
(cd "$work/src" && go build -o "$work/bin/" \
  -ldflags "-X github.com/prometheus/common/version.Version=$release" ./cmd/prometheus ./cmd/promtool) >&2
mkdir -p "$dest"
mv "$work/bin/prometheus" "$work/bin/promtool" "$dest/"
echo "$dest"
