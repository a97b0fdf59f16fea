# The phantom v2 data sets of train.sh (sourced; needs $lab), under WORK/data:
#   train        seed 1, 50 patients, 4 lesions per breast (lesion-enriched: enhancing lesions
#                cover about 1% of a breast); its last 10% validate
#   development  seed 2, 12 patients: chooses the default model and the seed shipped per arm
#   held-out     seeds 3, 4 and 5, 20 patients each, pooled in one pairs.csv: the final report only
# All 1664x1280; a set already written is kept.
phantom_rows=1664 phantom_cols=1280
phantom_data_sets() { # WORK
  local data=$1/data s
  phantom_set "$data/train" 1 50 4
  phantom_set "$data/development" 2 12
  [ -f "$data/held-out/pairs.csv" ] && return 0
  for s in 3 4 5; do phantom_set "$data/held-out/seed$s" $s 20; done
  # One CSV over the three seeds, paths relative to it (le, rc, rois are the first columns).
  { head -1 "$data/held-out/seed3/pairs.csv"
    for s in 3 4 5; do
      awk -F, -v OFS=, -v p="seed$s/" 'NR > 1 { $1 = p $1; $2 = p $2; if ($3 != "") $3 = p $3; print }' \
        "$data/held-out/seed$s/pairs.csv"
    done
  } > "$data/held-out/pairs.csv.tmp" && mv "$data/held-out/pairs.csv.tmp" "$data/held-out/pairs.csv"
}
phantom_set() { # DIR SEED PATIENTS [LESIONS]
  [ -f "$1/pairs.csv" ] || "$lab" phantom --out "$1" --seed "$2" --patients "$3" \
    --rows $phantom_rows --columns $phantom_cols ${4:+--lesions "$4"} >&2
}
