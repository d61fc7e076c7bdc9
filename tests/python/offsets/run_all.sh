#!/bin/sh
# Compile offsets.c against each pyenv CPython's own headers, write out-3.X.txt, and check each
# table against that interpreter's live memory (walk_check.py); Debian's static python3.11 is
# checked with the 3.11 table. Exit status is non-zero on the first mismatch.
set -e
cd "$(dirname "$0")"
for v in 3.8 3.9 3.10 3.11 3.12 3.13; do
    prefix=$(ls -d ~/.pyenv/versions/$v.* | head -1)
    inc=$prefix/include/python$v
    cc -w -I"$inc" -I"$inc/internal" offsets.c -o /tmp/amprof-py-offsets-$v
    /tmp/amprof-py-offsets-$v > out-$v.txt
    timeout 60 "$prefix/bin/python$v" walk_check.py out-$v.txt
done
[ -x /usr/bin/python3.11 ] && timeout 60 /usr/bin/python3.11 walk_check.py out-3.11.txt
