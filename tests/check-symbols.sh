#!/usr/bin/env bash
# check-symbols.sh -- the shared library's exported API surface.
#
#   check-symbols.sh <path-to-libcfutures.so> [header.h ...]
#
# Fails if libcfutures.so exports (defines, in its dynamic symbol table) any
# symbol that is not cf_-prefixed -- internal cf__* names included -- apart
# from the linker's own (_init, _fini, __bss_start, _edata, _end, ...), or
# if cf_version is not exported.  With headers, also checks that every
# CF_API function they declare is exported and every exported cf_ symbol is
# declared in one of them.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 <path-to-libcfutures.so> [header.h ...]" >&2
    exit 2
fi
lib=$1
shift
if [ ! -f "$lib" ]; then
    echo "check-symbols: $lib: no such file" >&2
    exit 2
fi
NM=${NM:-nm}

# "<value> <type> <name>[@@VERSION]" -> "<type> <name>"
syms=$("$NM" -D --defined-only "$lib" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $2, $3 }')
if [ -z "$syms" ]; then
    echo "check-symbols: $lib exports no symbols at all" >&2
    exit 1
fi

# The linker's and the C runtime's symbols, and a sanitizer runtime's
# (sanitized builds of the tree), are not ours.
ignore='^(_init|_fini|_edata|_end|__bss_start|__bss_end__|_bss_end__|__end__|__data_start|data_start|_IO_stdin_used|__dso_handle|__TMC_END__|_DYNAMIC|_GLOBAL_OFFSET_TABLE_|__(asan|ubsan|tsan|lsan|msan|sanitizer|sancov)_.*|___?(asan|tsan|ubsan)_.*)$'

fail=0
bad=$(printf '%s\n' "$syms" | awk '{print $2}' | grep -Ev "$ignore" \
      | grep -Ev '^cf_[A-Za-z0-9]' || true)
# (cf__* internals fail here too: the character after cf_ must not be _.)
if [ -n "$bad" ]; then
    echo "check-symbols: $lib exports symbols outside the public cf_ API:" >&2
    printf '%s\n' "$bad" | sed 's/^/  /' >&2
    echo "  (give them internal linkage or CF_HIDDEN; only CF_API names are public)" >&2
    fail=1
fi

if ! printf '%s\n' "$syms" | grep -Eq '^[TtWi] cf_version$'; then
    echo "check-symbols: cf_version is not exported as a function" >&2
    fail=1
fi

if [ $# -gt 0 ]; then
    exported=$(printf '%s\n' "$syms" | awk '$2 ~ /^cf_[A-Za-z0-9]/ {print $2}' | sort -u)
    # Declarations: "CF_API <type> [*]name(" on one line, as in cfutures.h.
    declared=$(cat "$@" | grep -E '^[[:space:]]*CF_API[[:space:]]' \
               | sed -E 's/\(.*//; s/.*[[:space:]*]//' | grep -E '^cf_' | sort -u)
    missing=$(comm -23 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
    extra=$(comm -13 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
    if [ -n "$missing" ]; then
        echo "check-symbols: declared CF_API in the header(s) but not exported:" >&2
        printf '%s\n' "$missing" | sed 's/^/  /' >&2
        fail=1
    fi
    if [ -n "$extra" ]; then
        echo "check-symbols: exported but not declared in the header(s):" >&2
        printf '%s\n' "$extra" | sed 's/^/  /' >&2
        fail=1
    fi
fi

n=$(printf '%s\n' "$syms" | awk '$2 ~ /^cf_[A-Za-z0-9]/' | wc -l)
if [ $fail -ne 0 ]; then
    exit 1
fi
echo "check-symbols: ok, $n cf_ symbols exported, nothing else"
