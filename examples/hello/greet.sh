#!/bin/sh
echo "$GREETING, $*! (words: $(tr '\n' ' ' < /app/sorted.txt))"
