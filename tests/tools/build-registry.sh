#!/usr/bin/env bash
# Builds the OCI registry the release tests push to: CNCF distribution's `registry`
# (github.com/distribution/distribution/v3, Apache-2.0), the reference implementation of the
# OCI distribution spec, run on loopback with its filesystem storage
# (aliasop_dev.local.oci_registry). Built from its Go module through the module proxy into
# ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin as its Makefile builds it (its version ldflags),
# and rebuilt only when DISTRIBUTION_VERSION or the Go version changed (a stamp keeps their hash).
set -euo pipefail

DISTRIBUTION_VERSION=v3.1.2

# shellcheck source=tests/tools/go-install.sh
source "$(dirname "$0")/go-install.sh"
pkg=github.com/distribution/distribution/v3
# Its Makefile's version ldflags.
go_install_tool registry-build registry "$DISTRIBUTION_VERSION" "$pkg/cmd/registry" \
  "-X $pkg/version.version=$DISTRIBUTION_VERSION -X $pkg/version.mainpkg=$pkg"
"$bin/registry" --version
