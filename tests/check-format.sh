#!/usr/bin/env bash
# check-format.sh -- fail if a C source of the tree is not formatted as
# .clang-format says (clang-format 14, Debian 12's).
#
#   check-format.sh [srcdir]      (default: the directory above this script)
#
# Checks src/, include/, tests/ and examples/ (*.c, *.h, recursively) and
# bench/*.c.  Prints clang-format's complaints and the command that fixes
# them; exits 1 on any difference, 77 if clang-format is missing.
# Environment: CLANG_FORMAT (default clang-format-14, else clang-format).
set -euo pipefail

srcdir=${1:-$(dirname "$0")/..}
cd "$srcdir"

if [ -z "${CLANG_FORMAT:-}" ]; then
    if command -v clang-format-14 >/dev/null 2>&1; then
        CLANG_FORMAT=clang-format-14
    else
        CLANG_FORMAT=clang-format
    fi
fi
if ! command -v "$CLANG_FORMAT" >/dev/null 2>&1; then
    echo "check-format: SKIPPED: $CLANG_FORMAT not found (Debian: apt-get install clang-format)"
    exit 77
fi
[ -f .clang-format ] || { echo "check-format: no .clang-format in $(pwd)" >&2; exit 2; }
version=$("$CLANG_FORMAT" --version | sed -n 's/.*version \([0-9][0-9]*\).*/\1/p')
if [ "$version" != 14 ]; then
    echo "check-format: note: $CLANG_FORMAT is version ${version:-?}; the style is tuned for 14" >&2
fi

files=()
for d in src include tests examples; do
    [ -d "$d" ] || continue
    while IFS= read -r -d '' f; do
        files+=("$f")
    done < <(find "$d" -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
done
for f in bench/*.c; do
    [ -f "$f" ] && files+=("$f")
done
if [ ${#files[@]} -eq 0 ]; then
    echo "check-format: no files to check" >&2
    exit 2
fi

if out=$("$CLANG_FORMAT" --dry-run --Werror "${files[@]}" 2>&1); then
    echo "check-format: ok, ${#files[@]} files"
    exit 0
fi
printf '%s\n' "$out" | grep -E 'error:|warning:' | head -n 40 >&2 || true
bad=$(printf '%s\n' "$out" | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: \(error\|warning\): .*/\1/p' | sort -u)
nbad=$(printf '%s\n' "$bad" | grep -c . || true)
echo "check-format: $nbad of ${#files[@]} files are not formatted:" >&2
printf '%s\n' "$bad" | sed 's/^/  /' >&2
echo "fix with: $CLANG_FORMAT -i $(printf '%s\n' "$bad" | tr '\n' ' ')" >&2
exit 1
