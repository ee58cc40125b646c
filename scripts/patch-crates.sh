#!/usr/bin/env bash
# Materialises the patched dependencies that Cargo.toml's [patch.crates-io] points at:
# each pristine crate from crates.io (its checksum checked), with the project's diff from
# patches/ applied, under .tools/patched/<crate>-<version>. Reruns only when the diff
# changed. Every make target that builds runs it; run it once before a plain `cargo`
# command on a fresh clone. See patches/README.md for what each patch fixes and why.
set -euo pipefail
cd "$(dirname "$0")/.."

# crate version sha256-of-the-.crate (as in crates.io's index)
PATCHED=(
  "async-nats 0.51.0 a4f92759f418774b78c36ef07885849150ce950c67d9bcdeff8a9c253f57d9a1"
)
CARGO=${CARGO:-cargo}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

say() { printf 'patch-crates: %s\n' "$*"; }

# The .crate archive from Cargo's download cache, fetched through a throwaway manifest
# when missing (the workspace itself cannot resolve until the patched copy exists).
crate_archive() {
  local name=$1 version=$2 found
  found=$(ls "$cargo_home"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n 1 || true)
  if [ -z "$found" ]; then
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/src" && : > "$tmp/src/lib.rs"
    printf '[package]\nname = "fetch-%s"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
      "$name" "$name" "$version" > "$tmp/Cargo.toml"
    "$CARGO" fetch --quiet --manifest-path "$tmp/Cargo.toml" >&2
    rm -rf "$tmp"
    found=$(ls "$cargo_home"/registry/cache/*/"$name-$version.crate" | head -n 1)
  fi
  printf '%s\n' "$found"
}

for entry in "${PATCHED[@]}"; do
  read -r name version sum <<<"$entry"
  diff="patches/$name-$version.patch"
  dest=".tools/patched/$name-$version"
  stamp=$(sha256sum "$diff" | cut -d' ' -f1)
  if [ "$(cat "$dest/.patched" 2>/dev/null)" = "$stamp" ]; then
    continue
  fi
  archive=$(crate_archive "$name" "$version")
  echo "$sum  $archive" | sha256sum -c --quiet -
  rm -rf "$dest" "$dest.tmp" && mkdir -p "$dest.tmp"
  tar -xzf "$archive" -C "$dest.tmp" --strip-components=1
  patch --quiet --forward -p1 -d "$dest.tmp" < "$diff"
  echo "$stamp" > "$dest.tmp/.patched"
  mv "$dest.tmp" "$dest"
  say "$name $version with $diff"
done
