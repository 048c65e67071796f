"""Plain NC (all ten labels) on cached quick-defenses victims: fields and seconds, for before/after."""
import json, sys, time
from pathlib import Path
import torch
from ebyd_bench.benchmark.grid.config import load_config
from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner
from ebyd_bench.benchmark.defenses.nc import NeuralCleanse

grid = load_config(Path("/tmp/m19/grid.yaml"))
opts = RunOptions(out_dir=Path("/tmp/ncb/out"), cache_dir=Path("/tmp/m19/cache"), data_root=Path("/work/shared/data"))
runner = StageRunner(grid, opts)
dom = runner.domain
ctx = dom.method_context(0)
out = {}
want = sys.argv[2].split(",")
for meta_path in sorted(Path("/tmp/m19/cache/models").rglob("*.json")):
    meta = json.loads(meta_path.read_text())
    attack = meta["config"]["attack"]["name"]
    if attack not in want or meta["config"]["dataset"]["defense_size"] != 500 or attack in out:
        continue
    art = runner.cache.load("models", meta_path.stem)
    net = dom.load_model(art.tensors)
    t0 = time.perf_counter()
    res = NeuralCleanse().defend(net, None, ctx)
    f = res.fields
    out[attack] = {"seconds": time.perf_counter() - t0, "l1": f["nc_mask_l1"], "epochs": f["nc_epochs"],
                   "ai": f["anomaly_index"], "label": f["nc_label"], "acc": f["nc_attack_acc"],
                   "images": {k: float(torch.as_tensor(v).double().sum()) for k, v in res.images.items()}}
    print(attack, out[attack], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
