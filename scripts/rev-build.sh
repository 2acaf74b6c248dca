# Sourced by the benchmark scripts that compare revisions: `rev_build REV` builds release mock-server
# and loadgen from REV (a git worktree under /tmp, with its own target dir) or, with no REV, from
# the working tree, and sets $src (the source tree) and $bin (its release binaries).
rev_build() {
    local rev="${1:-}"
    if [ -n "$rev" ]; then
        src="/tmp/tokenperf-$rev"
        [ -d "$src" ] || git worktree add --detach "$src" "$rev" >&2
    else
        src="$PWD"
    fi
    (cd "$src" && cargo build --release --locked -p mock-server -p loadgen >&2)
    bin="$src/target/release"
}
