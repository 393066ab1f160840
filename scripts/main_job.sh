#!/usr/bin/env bash
# The main job on generated data, CPU only: sets up .venv if needed, then
#   1. trains a small ResNeSt Mask R-CNN on the generated toy COCO set, evaluates it (COCO AP)
#      and writes demo overlays;
#   2. trains a small DeepLabV3 on dilated ResNeSt on the generated toy segmentation set,
#      evaluates it (mIoU / pixAcc) and writes demo masks and overlays;
#   3. prints both results.
# Outputs go to $OUT (default output/main_job); the toy data to $DETECTRON2_DATASETS (default
# ./datasets). Extra arguments are passed to both trainings as KEY VALUE overrides.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
PY="${VENV:-$ROOT/.venv}/bin/python"
OUT="${OUT:-output/main_job}"
DATA="${DETECTRON2_DATASETS:-datasets}"
DET_CFG=configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml
SEG_CFG=configs/quick_schedules/toy_deeplabv3_S14_OS8.yaml
start=$(date +%s)

echo "== [1/2] Mask R-CNN (ResNeSt-14-FPN) on toy_coco: train + COCO eval"
"$PY" tools/train_net.py --config-file "$DET_CFG" OUTPUT_DIR "$OUT/mask_rcnn" "$@"
"$PY" tools/demo.py --config-file "$DET_CFG" --input "$DATA/toy_coco/val" \
  --output "$OUT/mask_rcnn/demo" --opts MODEL.WEIGHTS "$OUT/mask_rcnn/model_final.pth"

echo "== [2/2] DeepLabV3 (dilated ResNeSt-14, OS8) on toy_sem_seg: train + mIoU eval"
"$PY" tools/train_net.py --config-file "$SEG_CFG" OUTPUT_DIR "$OUT/deeplabv3" "$@"
"$PY" tools/demo_semseg.py --config-file "$SEG_CFG" --input "$DATA/toy_sem_seg/images/val" \
  --output "$OUT/deeplabv3/demo" --opts MODEL.WEIGHTS "$OUT/deeplabv3/model_final.pth"

echo "== results (toy data; $(( $(date +%s) - start )) s in all)"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
for run, keys in (("mask_rcnn", ("bbox", "segm")), ("deeplabv3", ("sem_seg",))):
    with open(f"{out}/{run}/results.json") as f:
        results = json.load(f)["results"]
    for task in keys:
        metrics = results.get(task, {})
        shown = {k: metrics[k] for k in ("AP", "AP50", "mIoU", "pACC") if metrics.get(k) is not None}
        if not shown:
            sys.exit(f"{out}/{run}/results.json has no {task} metrics")
        print(f"{run:10s} {task:8s} " + "  ".join(f"{k} {v:.2f}" for k, v in shown.items()))
print(f"demo images: {out}/mask_rcnn/demo, {out}/deeplabv3/demo")
PYEOF
