# Sourced by the benchmark scripts: building a revision or this tree (`rev_build`, `before_and_now`)
# and starting a mock (`start_mock`). `rev_build REV [PACKAGE...]` builds the
# release binaries of PACKAGEs (default: mock-server and loadgen) from REV (a git worktree under
# /tmp, with its own target folder) or, with no REV (""), from the working tree, and sets $src (the
# source tree) and $bin (its release binaries).
#
# A revision's target folder starts as a copy of this tree's release build, so the dependencies
# (polars above all, 15 minutes from scratch) are not compiled again; the revision's own sources
# are then touched, because cargo names a workspace crate's artifacts by its path inside the
# workspace, so the copies would otherwise pass for the revision's.
rev_build() {
    local rev="${1:-}"
    shift || true
    local pkgs=("$@")
    [ ${#pkgs[@]} -gt 0 ] || pkgs=(mock-server loadgen)
    local args=()
    for p in "${pkgs[@]}"; do args+=(-p "$p"); done
    if [ -z "$rev" ]; then
        src="$PWD"
        cargo build --release --locked "${args[@]}" >&2
        bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
        return
    fi
    src="/tmp/tokenperf-$rev"
    [ -d "$src" ] || git worktree add --detach "$src" "$rev" >&2
    local main_release="${CARGO_TARGET_DIR:-$PWD/target}/release"
    if [ ! -d "$src/target/release" ] && [ -d "$main_release" ]; then
        mkdir -p "$src/target"
        cp -a "$main_release" "$src/target/release"
        find "$src" -path "$src/target" -prune -o -type f \( -name '*.rs' -o -name Cargo.toml \) \
            -exec touch {} +
    fi
    (cd "$src" && CARGO_TARGET_DIR="$src/target" cargo build --release --locked "${args[@]}" >&2)
    bin="$src/target/release"
}

# `before_and_now REV PACKAGE...`: with a REV, builds it (rev_build) and sets $old_bin to its
# binaries; then builds this tree and sets $bin.
before_and_now() {
    local rev="$1"
    shift
    old_bin=""
    if [ -n "$rev" ]; then
        rev_build "$rev" "$@"
        old_bin="$bin"
    fi
    rev_build "" "$@"
}

# `start_mock LOG COMMAND...`: runs a mock-server command line (COMMAND, e.g. with a taskset prefix)
# in the background with its output in LOG, waits until it listens, and sets $mock_pid and $url; the
# mock is stopped when the script exits.
start_mock() {
    local log="$1"
    shift
    # Emptied first: the background shell truncates it only when it runs, and a reused log's old
    # "listening on" line would hand back a mock that is gone.
    : >"$log"
    "$@" >"$log" 2>&1 &
    mock_pid=$!
    trap 'kill $mock_pid 2>/dev/null || true' EXIT
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.05; done
    url=$(grep -o 'http://[^ ]*' "$log" | head -n 1)
}
