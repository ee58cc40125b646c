#!/usr/bin/env bash
# Builds the OpenTelemetry Collector of otel/builder.yaml with the Collector Builder at the
# manifest's release, into .tools/otelcol-<release>-<manifest digest>/otelcol-chat, once per
# manifest (about 3 minutes and 2 GB of Go modules on a fresh machine). Prints the binary's
# path. Go modules come from the Go module proxy; GOPATH defaults to .tools/go.
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=otel/builder.yaml
release=$(sed -n 's/^  version: *//p' "$manifest")
digest=$(sha256sum "$manifest" | cut -c1-12)
dest=.tools/otelcol-$release-$digest
binary=$dest/otelcol-chat
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
export GOPATH=${GOPATH:-$PWD/.tools/go} GOFLAGS=-mod=mod
echo "build-collector: building the collector $release of $manifest (a few minutes the first time)" >&2
go install "go.opentelemetry.io/collector/cmd/builder@v$release" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^dist:|dist:\n  output_path: $work/dist|" "$manifest" > "$work/builder.yaml"
"$GOPATH/bin/builder" --config "$work/builder.yaml" >&2
mkdir -p "$dest"
mv "$work/dist/otelcol-chat" "$binary"
echo "$binary"
