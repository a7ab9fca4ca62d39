#!/usr/bin/env bash
# End-to-end checks of the dsc tool's surface: help, unknown options and commands, dsc info on
# good and bad files, dsc embed errors, and dsc selfcheck / bench on a tiny configuration.
# Every error must exit non-zero with a one-line message naming the thing at fault.
set -u
. "$(dirname "$0")/lib.sh"

# expect_fail NAME NEEDLE CMD...: CMD exits non-zero and its stderr contains NEEDLE.
expect_fail() {
  local name=$1 needle=$2
  shift 2
  "$@" > "$tmp/out" 2> "$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qF -- "$needle" "$tmp/err"; then ok "$name"
  else bad "$name (exit $rc, stderr: $(head -c 300 "$tmp/err"))"; fi
}
# expect_ok NAME NEEDLE CMD...: CMD exits 0 and its stdout contains NEEDLE.
expect_ok() {
  local name=$1 needle=$2
  shift 2
  "$@" > "$tmp/out" 2> "$tmp/err"
  local rc=$?
  if [ $rc -eq 0 ] && grep -qF -- "$needle" "$tmp/out"; then ok "$name"
  else bad "$name (exit $rc, stdout: $(head -c 300 "$tmp/out") stderr: $(head -c 300 "$tmp/err"))"; fi
}

expect_ok help "usage: dsc COMMAND" "$dsc" --help
expect_ok version "dsc " "$dsc" --version
expect_fail unknown_command '"frobnicate"' "$dsc" frobnicate
expect_fail no_command "usage" "$dsc"
for c in selfcheck info embed bench; do
  expect_ok "help_$c" "usage: dsc $c" "$dsc" "$c" --help
  expect_fail "unknown_option_$c" "--no-such-option" "$dsc" "$c" --no-such-option
done
expect_fail selfcheck_bad_arch "--arch=resnet19" "$dsc" selfcheck --arch resnet19
expect_fail selfcheck_bad_size "--size=abc" "$dsc" selfcheck --size abc
expect_fail selfcheck_missing_value "--size needs a value" "$dsc" selfcheck --size
expect_fail bench_unknown "unknown benchmark" "$dsc" bench walk

# A small trained backbone to inspect and embed with.
if "$dsc" selfcheck --arch resnet18 --stem small --size 32 --batch 4 --steps 2 --threads 1 \
     --save "$tmp/r18.safetensors" > "$tmp/selfcheck.log" 2>&1 && grep -q "selfcheck passed" "$tmp/selfcheck.log"; then
  ok selfcheck_small
else
  bad "selfcheck_small: $(tail -3 "$tmp/selfcheck.log")"
fi
expect_ok info_lists_tensors "layer4.1.bn2.running_var" "$dsc" info "$tmp/r18.safetensors"
expect_ok info_lists_metadata "producer" "$dsc" info "$tmp/r18.safetensors"
expect_ok bench_json '"img_per_s"' "$dsc" bench step --arch resnet18 --stem small --size 32 --batch 4 \
  --warmup 0 --steps 1 --threads 1 --json

# dsc info on bad files.
expect_fail info_missing "$tmp/none.safetensors" "$dsc" info "$tmp/none.safetensors"
printf 'abc' > "$tmp/short.safetensors"
expect_fail info_truncated "$tmp/short.safetensors" "$dsc" info "$tmp/short.safetensors"
head -c 1000 "$tmp/r18.safetensors" > "$tmp/cut.safetensors"
expect_fail info_cut "$tmp/cut.safetensors" "$dsc" info "$tmp/cut.safetensors"
expect_fail info_directory "$tmp" "$dsc" info "$tmp"
expect_fail info_two_files "exactly one file" "$dsc" info a b

# dsc embed errors.
/usr/bin/python3 -c "
from PIL import Image
Image.new('RGB', (40, 30), (200, 30, 90)).save('$tmp/img.png')
open('$tmp/notimage.jpg', 'w').write('hello')
"
expect_fail embed_needs_weights "--weights" "$dsc" embed --input "$tmp/img.png" --out "$tmp/e.safetensors"
expect_fail embed_missing_input "$tmp/nothere.png" "$dsc" embed --weights "$tmp/r18.safetensors" \
  --input "$tmp/nothere.png" --out "$tmp/e.safetensors"
expect_fail embed_bad_image "$tmp/notimage.jpg" "$dsc" embed --weights "$tmp/r18.safetensors" \
  --input "$tmp/notimage.jpg" --out "$tmp/e.safetensors"
expect_fail embed_bad_weights "$tmp/cut.safetensors" "$dsc" embed --weights "$tmp/cut.safetensors" \
  --input "$tmp/img.png" --out "$tmp/e.safetensors"
expect_fail embed_bad_layer "c6" "$dsc" embed --weights "$tmp/r18.safetensors" --input "$tmp/img.png" \
  --out "$tmp/e.safetensors" --layer c5,c6
expect_fail embed_unwritable "$tmp/no/dir/e.safetensors" "$dsc" embed --weights "$tmp/r18.safetensors" \
  --input "$tmp/img.png" --out "$tmp/no/dir/e.safetensors" --size 32 --resize 32
if "$dsc" embed --weights "$tmp/r18.safetensors" --input "$tmp/img.png" --out "$tmp/e.safetensors" \
     --size 32 --resize 32 2> "$tmp/err" && "$dsc" info "$tmp/e.safetensors" > "$tmp/info" &&
   grep -q "c2 .*F32.*\[1, 64, 32, 32\]" "$tmp/info" && grep -q "pool .*F32.*\[1, 512\]" "$tmp/info"; then
  ok embed_shapes
else
  bad "embed_shapes: $(cat "$tmp/err" "$tmp/info" 2>/dev/null | head -c 600)"
fi

finish
