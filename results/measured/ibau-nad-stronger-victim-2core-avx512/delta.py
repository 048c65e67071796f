"""Analysis (issue 19): does I-BAU's first-round universal perturbation point at the backdoor?
For each cached quick-defenses victim: fit δ as I-BAU's round 1 does (D_d only), project it onto
radius 10, and read on D_d where x + δ sends the images (share to the attack's target label)."""
import json, sys
from collections import Counter
from pathlib import Path
import torch
from ebyd_bench.benchmark.grid.config import load_config
from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner
from ebyd_bench.benchmark.defenses.ibau import ImplicitBackdoorAdversarialUnlearning as IBAU
from ebyd_bench.benchmark.defenses.common import defense_tensors
from ebyd_bench.benchmark.tensors import batches, normalize

grid = load_config(Path("/tmp/sv/grid.yaml"))
opts = RunOptions(out_dir=Path("/tmp/sv/diag"), cache_dir=Path("/tmp/sv/cache"), data_root=Path("/work/shared/data"))
runner = StageRunner(grid, opts)
dom = runner.domain
ctx = dom.method_context(0)
x_all, y_all = defense_tensors(ctx)
ibau = IBAU()
split = [(x_all[i], y_all[i]) for i in batches(len(y_all), ibau.batch_size)]
rows = []
for meta_path in sorted(Path("/tmp/sv/cache/models").rglob("*.json")):
    meta = json.loads(meta_path.read_text())
    key = meta_path.stem
    art = runner.cache.load("models", key)
    if art is None:
        continue
    attack = meta["config"]["attack"]["name"]
    net = dom.load_model(art.tensors).eval()
    torch.manual_seed(0)
    raw = ibau.universal_delta(net, ibau.round_batches(split))
    delta = ibau.project(raw)
    with torch.no_grad():
        pred = net(normalize(x_all + delta)).argmax(1)
        clean = net(normalize(x_all)).argmax(1)
    target = 0
    keep = y_all != target
    share = float((pred[keep] == target).float().mean())
    top, n = Counter(pred.tolist()).most_common(1)[0]
    rows.append({"attack": attack, "model_key": key[:12], "defense_size": meta["config"]["dataset"]["defense_size"],
                 "fitted_norm": round(float(raw.norm()), 1), "target_share": round(share, 3), "top_class": top,
                 "top_share": round(n / len(pred), 3), "dd_acc": round(float((clean == y_all).float().mean()), 3)})
    print(rows[-1], flush=True)
import platform
json.dump({"what": "I-BAU round-1 universal perturbation (its universal_delta on the victim, projected onto L2 radius 10) "
                   "applied to the 500-image D_d of the stronger-victim grid, seed 0; target_share: share of "
                   "non-target D_d images sent to the target label 0; top_class/top_share: the most predicted class "
                   "under x + delta; dd_acc: the victim's clean D_d accuracy. No test data.",
           "machine": "2-core AMD EPYC AVX512, fp32, torch " + torch.__version__, "commit": "5a7ee4b",
           "rows": rows}, open("/tmp/sv/delta_targets.json", "w"), indent=1)
