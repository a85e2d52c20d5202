#!/bin/sh
# The include rule of src/: a file includes only headers of its own folder or
# of a lower layer. Layers, bottom to top (docs/DESIGN.md):
#   base format model text compute method output
# cli/ and tests/ sit above every layer and may include any of them.
# Prints "FILE: includes HEADER (LAYER above LAYER)" for each violation and
# exits 1; prints one summary line and exits 0 when the tree obeys the rule.
cd "$(dirname "$0")/.." || exit 2
order="base format model text compute method output"
rank() {
    i=0
    for l in $order; do
        [ "$l" = "$1" ] && { echo $i; return; }
        i=$((i + 1))
    done
    echo -1
}
bad=0; files=0
for f in src/*/*.c src/*/*.h; do
    [ -f "$f" ] || continue
    files=$((files + 1))
    own=$(basename "$(dirname "$f")")
    r=$(rank "$own")
    if [ "$r" -lt 0 ]; then
        echo "$f: folder '$own' is not a layer (known: $order)"; bad=1; continue
    fi
    # quoted includes only; <system> headers are not ours
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        case "$inc" in
        layermap.h) continue ;;                       # the public header
        */*) dir=${inc%%/*} ;;
        *) dir=$own; [ -f "src/$own/$inc" ] || { echo "$f: includes \"$inc\", which is not in src/$own (name its layer: \"LAYER/$inc\")"; bad=1; continue; } ;;
        esac
        ri=$(rank "$dir")
        if [ "$ri" -lt 0 ]; then
            echo "$f: includes \"$inc\" from '$dir', which is not a layer"; bad=1
        elif [ "$ri" -gt "$r" ]; then
            echo "$f: includes \"$inc\" ($dir is above $own)"; bad=1
        elif [ ! -f "src/$inc" ]; then
            echo "$f: includes \"$inc\", which does not exist"; bad=1
        fi
    done
done
[ "$bad" -eq 0 ] && echo "layers: $files files of src/ include only their own or lower layers"
exit $bad
