#!/usr/bin/env bash
# Builds the S3 server the artifact-store tests run: versitygw (github.com/versity/versitygw,
# Apache-2.0), a real S3 gateway that keeps buckets and objects in a POSIX directory
# (`versitygw --access KEY --secret SECRET --port :PORT posix DIR`). It is built from its Go
# module through the module proxy into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin, and rebuilt
# only when VERSITYGW_VERSION or the Go version changed (a stamp beside it keeps their hash).
set -euo pipefail

VERSITYGW_VERSION=v1.8.0

# shellcheck source=tests/tools/go-install.sh
source "$(dirname "$0")/go-install.sh"
# versitygw's own version ldflags (its Makefile), so `versitygw --version` tells it. Cold: about
# 3 minutes on 2 cores.
go_install_tool s3-build versitygw "$VERSITYGW_VERSION" \
  github.com/versity/versitygw/cmd/versitygw "-X main.Version=$VERSITYGW_VERSION"
