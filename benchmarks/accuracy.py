"""Accuracy benchmark on real data: the shipped Fashion-MNIST reference models, paper-default search.

    python -m benchmarks.accuracy --suite main selection losses hard   # any subset; resumable
    python -m benchmarks.accuracy --report-only                        # rebuild tables/plot from the JSON

Suites:
  main       both models × W3A8, W4A8, W8A8 × seeds (calibration-fitness selection, the default)
  selection  both models at W3A8: selection on a held-out train split, and the published code's
             test-set selection (labelled: it selects on the test set, so its number is not a test result)
  losses     DeiT-shaped model at W3A8: infoNCE, MSE, KL, cosine, with the fitness/top-1 rank correlation
             over all evaluated candidates (top-1 on a fixed 2,000-image test subset)
  variants   both models at W3A8 (--variant-bits) with options beyond the paper (pre-logit fitness, relative
             mutation, MLP weight scales, MLP + activation scales, patch-embed / stem weight scales)
  hard       a setting where the calibrated init loses ≥ 3 points (W3A4), with the same correlation
Records go to benchmarks/results/accuracy.json (one per run, the results.json keys), tables to
BENCHMARKS.md, the chart to benchmarks/results/accuracy.png.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

from benchmarks.fingerprint import DEFINITION, fingerprint, holds, platform_id
from benchmarks.common import RESULTS, ROOT, machine, table, update_section, write_json
from benchmarks.synthetic import fit_cli
from evolq_pl.models.reference import reference_model
from evolq_pl.report.stats import compare_runs, describe, verdict, with_holm

MODELS = ("deit_fmnist", "levit_fmnist")
# options beyond the paper, tried when the paper's search shows no gain (SearchConfig overrides)
VARIANTS = {
    "prelogits": dict(features="prelogits"),
    "relative-5%": dict(relative_mutation=True, relative_range=0.05),
    "mlp": dict(include_mlp=True),
    "embed": dict(include_embed=True),
    "embed+relative-5%": dict(include_embed=True, relative_mutation=True, relative_range=0.05),
    "embed+mlp+acts": dict(include_embed=True, include_mlp=True, include_acts=True),
    "mlp+acts": dict(include_mlp=True, include_acts=True),
    "prelogits+relative+mlp+acts": dict(features="prelogits", relative_mutation=True, relative_range=0.05,
                                        include_mlp=True, include_acts=True),
    "kl": dict(loss="kl"),
}
# the preset beyond the paper is chosen among these on the validation split (one option per knob we have:
# stem/patch-embed unit, relative mutation, MLP + activation scales, pre-logit features, loss, and the
# stem unit combined with each of the two others)
PRESET_CANDIDATES = ("embed", "relative-5%", "mlp+acts", "prelogits", "kl", "embed+relative-5%", "embed+mlp+acts")
VAL_SIZE = 10_000  # validation images carved from train (fixed for every seed), disjoint from calibration
JSON = RESULTS / "accuracy.json"


def specs(suites: list[str], seeds: list[int], variants: tuple[str, ...] = tuple(VARIANTS),
          variant_bits: tuple[int, ...] = (3,)) -> list[dict[str, Any]]:
    out = []
    for suite in suites:
        if suite == "main":
            out += [dict(suite=suite, ref=m, w_bits=b, a_bits=8, seed=s) for m in MODELS for b in (3, 4, 8) for s in seeds]
        elif suite == "selection":
            out += [dict(suite=suite, ref=m, w_bits=3, a_bits=8, seed=s, selection=sel)
                    for m in MODELS for sel in ("holdout", "test_oracle") for s in seeds]
        elif suite == "losses":
            out += [dict(suite=suite, ref="deit_fmnist", w_bits=3, a_bits=8, seed=0, loss=loss, candidates=2000)
                    for loss in ("infonce", "mse", "kl", "cosine")]
        elif suite == "variants":
            out += [dict(suite=suite, ref=m, w_bits=b, a_bits=8, seed=s, variant=v)
                    for m in MODELS for b in variant_bits for v in variants for s in seeds]
        elif suite == "preset-val":
            out += [dict(suite=suite, ref=m, w_bits=3, a_bits=8, seed=s, variant=v)
                    for m in MODELS for v in (None, *PRESET_CANDIDATES) for s in seeds]
        elif suite == "preset-test":  # the preset and the paper's search, both at this commit, on the same seeds
            choice = chosen_preset(load()["records"])["preset"]
            out += [dict(suite=suite, ref=m, w_bits=3, a_bits=8, seed=s, variant=v)  # pairs complete one by one
                    for s in seeds for m in MODELS for v in (None, choice)]
        elif suite == "hard":
            out += [dict(suite=suite, ref=m, w_bits=3, a_bits=4, seed=0, candidates=2000) for m in MODELS]
        else:
            raise ValueError(f"unknown suite {suite!r}; accepted: main, selection, losses, variants, hard, "
                             "preset-val, preset-test")
    return out


def key(spec: dict[str, Any]) -> str:
    return "|".join(f"{k}={spec.get(k)}" for k in ("suite", "ref", "w_bits", "a_bits", "seed", "selection", "loss",
                                                    "variant"))


CONFIGS = {"deit_fmnist": "configs/fmnist/deit.yaml", "levit_fmnist": "configs/fmnist/levit.yaml"}
PRESET_CONFIG = "configs/presets/beyond_paper.yaml"


def _flag(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _preset_options() -> dict[str, Any]:
    """The search options of the shipped preset file (what ``--config configs/presets/beyond_paper.yaml`` sets)."""
    import yaml
    return yaml.safe_load((ROOT / PRESET_CONFIG).read_text())["model"]["init_args"]["search"]


def command(spec: dict[str, Any]) -> list[str]:
    """The ``evolq-pl fit`` arguments of one record: the shipped config of its model (and the shipped preset
    file where the variant is the preset), then what the spec sets. The seed goes where ``evolq-pl seeds`` puts
    it: search seed, calibration-subset seed and ``seed_everything``."""
    args = ["--config", CONFIGS[spec["ref"]]]
    search = dict(VARIANTS.get(spec.get("variant"), {}))
    if search and search == _preset_options():
        args += ["--config", PRESET_CONFIG]
        search = {}
    search.update({"loss": spec["loss"]} if spec.get("loss") else {})
    seed = str(spec["seed"])
    args += ["--model.init_args.quant.w_bits", str(spec["w_bits"]), "--model.init_args.quant.a_bits",
             str(spec["a_bits"]), "--model.init_args.search.seed", seed, "--data.init_args.seed", seed,
             "--seed_everything", seed]
    for name, value in search.items():
        args += [f"--model.init_args.search.{name}", _flag(value)]
    if spec.get("selection"):
        args += ["--model.init_args.selection", spec["selection"]]
    if spec.get("selection") == "holdout":
        args += ["--data.init_args.holdout_size", "1000"]
    if spec.get("candidates"):
        args += ["--model.init_args.candidate_eval_size", str(spec["candidates"])]
    if spec["suite"] == "preset-val":  # choices are made on the validation split, never on test
        args += ["--data.init_args.val_size", str(VAL_SIZE), "--data.init_args.eval_split", "val"]
    # eager: the same bits as compiled (tests/search/test_compiled.py), and no compile trial per record (auto
    # tries one when load makes the eager search look long; on 2 CPU cores it measured compiled 1.55x slower)
    return args + ["--model.init_args.search.compile_backend", "null", "--trainer.enable_progress_bar", "false",
                   "--overwrite", "true"]


def run(spec: dict[str, Any], threads_note: str) -> dict[str, Any]:
    """One record, measured by the command a user types (``evolq-pl fit`` on the shipped configs, in a fresh
    process); the record keeps that command."""
    ref = reference_model(spec["ref"])
    run_dir = ROOT / "runs" / "bench" / key(spec).replace("|", "_")
    out = fit_cli(command(spec), run_dir)
    if out["returncode"] != 0:
        raise RuntimeError(f"{out['command']} exited {out['returncode']}:\n{out['error_tail']}")
    record = json.loads((run_dir / "results.json").read_text())
    record.update(spec=spec, key=key(spec), wall_seconds=out["wall_seconds"], threads=threads_note,
                  command=out["command"], checkpoint_sha256=ref["sha256"], fingerprint=fingerprint(),
                  platform=platform_id(), definition=DEFINITION)
    return record


def is_current(record: dict[str, Any]) -> bool:
    """Whether a record was measured on the reference checkpoint shipped now (a retrained model supersedes it)."""
    return record.get("checkpoint_sha256") == reference_model(record["spec"]["ref"])["sha256"]


def to_run(wanted: list[dict[str, Any]], records: dict[str, dict[str, Any]], now: str | None = None,
           here: bool = False, force: bool = False) -> list[dict[str, Any]]:
    """Which of ``wanted`` to measure. Without ``now``: the settings with no current record (``force``: all).
    With ``now`` (``--stale``, the working tree's fingerprint): only recorded settings, those whose record does
    not hold for it (``here``: also those measured on another platform or fingerprint definition) — rerunning a
    cited table never adds a setting no suite ran."""
    out = []
    for spec in wanted:
        old = records.get(key(spec))
        if now is not None and old is None:
            continue
        done = old is not None and is_current(old) and (now is None or holds(old, now))
        if done and here:
            done = (old.get("platform"), old.get("definition"), old.get("fingerprint")) == \
                (platform_id(), DEFINITION, now)
        if force or not done:
            out.append(spec)
    return out


def paired(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Evol-Q against the calibrated init over a group's seeds (McNemar when every run stored correctness)."""
    return compare_runs(sorted(rs, key=lambda r: r["spec"]["seed"]))


def family(groups: dict[Any, list[dict[str, Any]]]) -> dict[Any, dict[str, Any]]:
    """The paired comparison of each group of one family of claims (a suite's table), McNemar p adjusted over
    the family by Holm's method (``holm_p``, which the verdict uses)."""
    return with_holm({name: paired(rs) for name, rs in groups.items()})


def _runs(records: dict[str, dict[str, Any]], suite: str, variant: str | None,
          w_bits: int = 3) -> dict[tuple[str, int], dict]:
    """Current records of one suite, variant and weight width (A8) by (model, seed)."""
    return {(r["spec"]["ref"], r["spec"]["seed"]): r for r in records.values()
            if is_current(r) and r["spec"]["suite"] == suite and r["spec"].get("variant") == variant
            and r["spec"]["w_bits"] == w_bits}


def chosen_preset(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The preset chosen on the validation split: the candidate whose Evol-Q top-1 beats the paper search's
    Evol-Q by the most on validation images, averaged over both models and the seeds (paired by model and
    seed). Test images play no part. Raises until the preset-val suite has run every candidate alike."""
    paper = _runs(records, "preset-val", None)
    scores = {}
    for v in PRESET_CANDIDATES:
        runs = _runs(records, "preset-val", v)
        common = sorted(set(paper) & set(runs))
        if common:
            scores[v] = {"delta_mean": statistics.mean(runs[k]["top1_evolq"] - paper[k]["top1_evolq"] for k in common),
                         "pairs": len(common)}
    if len(scores) < len(PRESET_CANDIDATES) or len({sc["pairs"] for sc in scores.values()}) > 1:
        raise ValueError("suite preset-test needs the preset-val suite complete for every candidate first: "
                         "python -m benchmarks.accuracy --suite preset-val --seeds 0 1")
    return {"preset": max(scores, key=lambda v: scores[v]["delta_mean"]), "val_delta_mean": scores}


def _versus(new: dict[tuple[str, int], dict], base: dict[tuple[str, int], dict], ref: str) -> dict[str, Any] | None:
    """``new``'s Evol-Q top-1 against ``base``'s for one model, paired by the seeds both ran."""
    seeds = sorted(s for m, s in set(new) & set(base) if m == ref)
    p = compare_runs([new[ref, s] for s in seeds], [base[ref, s] for s in seeds], base="evolq") if seeds else None
    return None if p is None else {"seeds": seeds, **p}


def preset_comparison(records: dict[str, dict[str, Any]], preset: str) -> dict[str, dict[str, Any]]:
    """Per model, on test: the preset's Evol-Q against the paper search's Evol-Q, both run by the preset-test
    suite (same commit, same seeds and calibration images)."""
    paper, runs = _runs(records, "preset-test", None), _runs(records, "preset-test", preset)
    return with_holm({ref: p for ref in MODELS if (p := _versus(runs, paper, ref)) is not None})


def jsonable(p: dict[str, Any]) -> dict[str, Any]:
    """A paired comparison for JSON (which has no NaN: a one-seed interval is null)."""
    return {**p, "delta_ci95": [None if math.isnan(v) else v for v in p["delta_ci95"]]}


def preset_record(records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """accuracy.json's "preset": the validation choice and, per model, its paired test comparison."""
    try:
        choice = chosen_preset(records)
    except ValueError:
        return None
    tests = preset_comparison(records, choice["preset"])
    return {**choice, "test_vs_paper": {ref: jsonable(p) for ref, p in tests.items()}}


def group_stats(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per compared group of current records (suite, model, bits, selection, loss, variant): the paired
    statistics of Evol-Q against init, for accuracy.json."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records.values():
        if is_current(r):
            groups.setdefault(key({**r["spec"], "seed": "*"}), []).append(r)
    suites = {r["spec"]["suite"] for rs in groups.values() for r in rs}
    compared = {name: p for suite in sorted(suites)  # one family of claims per suite
                for name, p in family({n: rs for n, rs in groups.items() if rs[0]["spec"]["suite"] == suite}).items()}
    out = {}
    for name, rs in sorted(groups.items()):
        p = compared[name]
        out[name] = {k: p[k] for k in ("n_seeds", "delta_mean")}
        out[name].update(gain=verdict(p) == "gain", loss=verdict(p) == "loss")  # Holm's correction included
        out[name]["delta_ci95"] = jsonable(p)["delta_ci95"]
        out[name].update(seeds=sorted(r["spec"]["seed"] for r in rs), mcnemar_p=p.get("mcnemar_p"),
                         holm_p=p.get("holm_p"), verdict=verdict(p), only_init=p.get("only_base"),
                         only_evolq=p.get("only_new"))
    return out


def _p(p: dict[str, Any]) -> str:
    """McNemar p (Holm-adjusted over the table) for a table cell."""
    if p.get("mcnemar_p") is None:
        return "-"
    return f"{p['mcnemar_p']:.2g}" + (f" (Holm {p['holm_p']:.2g})" if p.get("holm_p") is not None else "")


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def load() -> dict[str, Any]:
    """{"records": key → record, "superseded": records replaced after their checkpoint was retrained}."""
    stored = json.loads(JSON.read_text()) if JSON.exists() else {}
    return {"records": stored.get("records", {}), "superseded": stored.get("superseded", []),
            "groups": stored.get("groups"), "preset": stored.get("preset")}


def derived(stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with its statistics recomputed from the records: per-group paired comparisons and the preset."""
    stored.update(groups=group_stats(stored["records"]), preset=preset_record(stored["records"]))
    return stored


def _group(pool: list[dict[str, Any]], suite: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in pool:
        s = r["spec"]
        if s["suite"] == suite:
            out.setdefault((s["ref"], s["w_bits"], s["a_bits"], s.get("selection", "calibration"),
                            s.get("loss", "infonce") + (f" / {s['variant']}" if s.get("variant") else "")),
                           []).append(r)
    return out


def _rows(groups: dict[tuple, list[dict[str, Any]]]) -> list[list[Any]]:
    out = []
    compared = family(groups)
    for (ref, w, a, sel, loss), rs in sorted(groups.items()):
        p = compared[ref, w, a, sel, loss]
        df = [r["fitness_init"] - r["fitness_final"] for r in rs]
        rho = [r["spearman_fitness_top1"] for r in rs if "spearman_fitness_top1" in r]
        out.append([ref, f"W{w}A{a}", sel, loss, len(rs), f"{rs[0]['top1_float']:.2f}",
                    mean_std([r["top1_init"] for r in rs]), mean_std([r["top1_evolq"] for r in rs]),
                    describe(p, mcnemar=False), _p(p), verdict(p),
                    f"{statistics.mean(df):.2e}", f"{rho[0]:.2f}" if rho else "-",
                    f"{statistics.mean(r['search_seconds'] for r in rs):.0f}"])
    return out


HEADER = ["model", "bits", "selection", "loss", "seeds", "float top-1", "init top-1", "Evol-Q top-1",
          "Δ top-1 (Evol-Q − init), mean [95 % CI]", "McNemar p (Holm over the table)", "verdict", "fitness gain",
          "Spearman(fitness, top-1)", "search s"]
SECTIONS = (("Main table (selection on calibration fitness, the default)", "main"),
            ("Selection: held-out train split vs the published test-set selection (W3A8). "
             "**`test_oracle` picks its state on the test set: its top-1 is not a valid test result**; "
             "it measures how much that practice inflates a reported gain.", "selection"),
            ("Fitness losses at W3A8 (DeiT-shaped; Spearman over every evaluated candidate, top-1 on a fixed "
             "2,000-image test subset; negative = lower fitness goes with higher top-1)", "losses"),
            ("Harder setting (W3A4)", "hard"),
            ("Options beyond the paper (chosen among on test top-1 before the validation split existed: "
             "exploratory, not a confirmed result)", "variants"))


def _commits(pool: list[dict[str, Any]]) -> str:
    commits = sorted({r.get("machine", {}).get("commit", "unknown") for r in pool})
    return f"commit{'s' if len(commits) > 1 else ''} {', '.join(f'`{c}`' for c in commits)}"


def report(records: dict[str, dict[str, Any]]) -> str:
    """The BENCHMARKS.md section: records measured on the shipped checkpoints."""
    recs = [r for r in records.values() if is_current(r)]
    parts = ["## Accuracy on Fashion-MNIST\n\n`python -m benchmarks.accuracy --suite ...` — shipped reference "
             "models, paper-default search (P = 10, K = 3, population 15, tournament 10), 1,000 calibration "
             "images (seeded by the run's seed), top-1 on all 10,000 test images, mean ± std over seeds "
             "(sample std, ddof = 1). Δ: the mean paired difference Evol-Q − init over seeds with its 95 % t "
             "interval; McNemar: exact two-sided test on per-image correctness pooled over seeds (runs that "
             "stored it), Holm-adjusted over each table (one family of claims). A gain (or loss) is claimed only where "
             "the interval excludes zero and the adjusted McNemar p < 0.05. "
             "`search s` includes per-candidate or per-step test evaluations where a suite makes them; runs "
             "shared the 2 cores with other processes. The records hold for the code at HEAD where "
             "`python -m benchmarks.report --check` passes: each was measured here by code of the working tree's "
             "fingerprint, or its commit's code gives that fingerprint on the checking machine "
             "(`benchmarks/fingerprint.py`: the bits of a small search). Per-image results reproduce exactly "
             "only on the kind of CPU that measured them (`python -m benchmarks.accuracy --verify K`): the same "
             "code gives other bits on another CPU, whose kernels round differently.\n"]
    for title, suite in SECTIONS:
        g = _group(recs, suite)
        if g:
            pool = [r for rs in g.values() for r in rs]
            m = pool[0].get("machine", {})
            parts.append(f"### {title}\n\nMeasured at {_commits(pool)} on {m.get('device', 'cpu')} "
                         f"({m.get('cores', '?')} cores, {m.get('torch_threads', '?')} torch threads, torch "
                         f"{m.get('torch', '?')}).\n\n" + table(HEADER, _rows(g)) + "\n")
    parts += preset_sections(records)
    parts.append("![accuracy](benchmarks/results/accuracy.png)\n")
    return "\n".join(parts)


def preset_sections(records: dict[str, dict[str, Any]]) -> list[str]:
    """The preset beyond the paper: its choice on the validation split, then its test confirmation."""
    paper = _runs(records, "preset-val", None)
    if not paper:
        return []
    rows = []
    for v in PRESET_CANDIDATES:
        found = [_versus(_runs(records, "preset-val", v), paper, ref) for ref in MODELS]
        rows.append([v, f"`{VARIANTS[v]}`", *(f"{describe(p, mcnemar=False)} ({p['n_seeds']} seeds)" if p else "-"
                                              for p in found)])
    out = [f"### Preset beyond the paper, chosen on the validation split (W3A8)\n\n`python -m benchmarks.accuracy "
           f"--suite preset-val --seeds 0 1` — every candidate and the paper's search on the same seeds, "
           f"calibration images drawn from the train images outside a fixed {VAL_SIZE:,}-image validation "
           f"split, top-1 on that validation split (test images unused). Cell: Evol-Q top-1 of the candidate "
           f"minus the paper search's, paired by seed. Measured at {_commits(list(paper.values()))}.\n\n"
           + table(["candidate", "SearchConfig", *MODELS], rows) + "\n"]
    try:
        choice = chosen_preset(records)
    except ValueError as err:
        return out + [f"No choice yet: {err}\n"]
    name = choice["preset"]
    out.append(f"Chosen (largest mean over both models): **{name}** (mean Δ "
               f"{choice['val_delta_mean'][name]['delta_mean']:+.2f} on validation), shipped as "
               f"`configs/presets/beyond_paper.yaml`.\n")
    tests = preset_comparison(records, name)
    if not tests:
        return out
    runs, paper_test = _runs(records, "preset-test", name), _runs(records, "preset-test", None)
    rows = [[ref, p["n_seeds"], mean_std([paper_test[ref, s]["top1_evolq"] for s in p["seeds"]]),
             mean_std([runs[ref, s]["top1_evolq"] for s in p["seeds"]]), describe(p, mcnemar=False),
             _p(p), verdict(p)]
            for ref, p in tests.items()]
    seeds = " ".join(str(s) for s in sorted({s for _, s in runs}))
    out.append(f"### Preset confirmed on test (W3A8): {name} against the paper's search\n\n`python -m "
               f"benchmarks.accuracy --suite preset-test --seeds {seeds}` — seeds no suite had run before (new "
               f"calibration draws), the preset and the paper's search run by the same command at the same "
               f"commit on the same seeds and calibration images, top-1 on the 10,000 test images. Δ: preset − "
               f"paper Evol-Q top-1, paired by seed, 95 % t interval; McNemar on per-image correctness pooled over "
               f"seeds. Measured at {_commits(list(runs.values()) + list(paper_test.values()))}.\n\n"
               + table(["model", "seeds", "paper Evol-Q top-1", "preset Evol-Q top-1",
                        "Δ (preset − paper) [95 % CI]", "McNemar p", "verdict"], rows) + "\n")
    return out


def history(records: dict[str, dict[str, Any]], superseded: list[dict[str, Any]]) -> str:
    """BENCHMARKS_HISTORY.md: records measured on earlier reference checkpoints (not comparable)."""
    stale = [r for r in records.values() if not is_current(r)] + [r for r in superseded if "superseded_reason" not in r]
    parts = ["## Accuracy records measured on earlier reference checkpoints\n\nKept for the record; not "
             "comparable with BENCHMARKS.md. Rerun with the same `--suite` to replace them.\n"]
    for _, suite in (*SECTIONS, ("", "preset-test")):
        g = _group(stale, suite)
        if g:
            shas = sorted({f"{r['spec']['ref']} `{r.get('checkpoint_sha256', 'unknown')[:8]}`"
                           for rs in g.values() for r in rs})
            parts.append(f"Suite `{suite}` ({', '.join(shas)}):\n\n" + table(HEADER, _rows(g)) + "\n")
    withdrawn: dict[str, list[dict[str, Any]]] = {}
    for r in superseded:
        if "superseded_reason" in r:
            withdrawn.setdefault(r["superseded_reason"], []).append(r)
    for reason, rs in withdrawn.items():
        rows = [[r["spec"]["ref"], r["spec"]["seed"], r["spec"].get("variant"), f"{r['top1_evolq']:.2f}",
                 r.get("machine", {}).get("commit", "?")] for r in sorted(rs, key=lambda r: (r["spec"]["ref"],
                                                                                               r["spec"]["seed"]))]
        parts.append(f"## Withdrawn records\n\n{reason[0].upper() + reason[1:]}. What they measured:\n\n"
                     + table(["model", "seed", "variant", "Evol-Q top-1", "commit"], rows) + "\n")
    return "\n".join(parts)


def plot(records: dict[str, dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in records.values() if r["spec"]["suite"] == "main" and is_current(r)]
    labels = sorted({(r["spec"]["ref"], r["spec"]["w_bits"]) for r in main})
    if not labels:
        return
    # the stem/patch-embed search option, where it ran on every seed of a main-table setting
    embed = [r for r in records.values() if r["spec"].get("variant") == "embed" and is_current(r)]
    bars = [("calibrated init", main, "top1_init"), ("Evol-Q (paper search)", main, "top1_evolq"),
            ("Evol-Q + include_embed", embed, "top1_evolq")]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.27
    for j, (name, pool, field) in enumerate(bars):
        vals = [[r[field] for r in pool if (r["spec"]["ref"], r["spec"]["w_bits"]) == lab] for lab in labels]
        xs = [i + (j - 1) * width for i, v in enumerate(vals) if len(v) > 1]
        means = [statistics.mean(v) for v in vals if len(v) > 1]
        stds = [statistics.stdev(v) for v in vals if len(v) > 1]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=name)
    floats = [next(r["top1_float"] for r in main if (r["spec"]["ref"], r["spec"]["w_bits"]) == lab) for lab in labels]
    ax.scatter(range(len(labels)), floats, marker="_", s=600, color="black", label="float", zorder=3)
    ax.set_xticks(range(len(labels)), [f"{ref.split('_')[0]}\nW{b}A8" for ref, b in labels])
    lo = min(min(r["top1_init"], r["top1_evolq"]) for r in main)
    ax.set_ylim(max(0, lo - 2), max(floats) + 1)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Fashion-MNIST reference models (mean ± std over seeds; settings with ≥ 2 seeds)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy.png", dpi=120)


COMPARED = ("top1_float", "top1_init", "top1_evolq", "correct_float", "correct_init", "correct_evolq",
            "fitness_init", "fitness_final")


def verify(records: dict[str, dict[str, Any]], k: int) -> int:
    """Rerun ``k`` records chosen at random among those measured on this platform by code of the working tree's
    fingerprint (the others are expected to differ: the kernels of another CPU round differently, and
    ``--stale`` reruns records of other code); 0 if each reproduces exactly (top-1, per-image correctness,
    fitness), else 1 after printing what differs."""
    import random
    now, here = fingerprint(), platform_id()
    pool = sorted(n for n, r in records.items() if is_current(r) and r.get("fingerprint") == now
                  and r.get("platform") == here and r.get("definition") == DEFINITION)
    if len(pool) < k:
        raise SystemExit(f"--verify {k}: only {len(pool)} records were measured here ({here}) with the working "
                         f"tree's fingerprint {now}")
    chosen = random.Random().sample(pool, k)
    failed = 0
    for name in chosen:
        old = records[name]
        print(f"== verify {name} (measured at {old.get('machine', {}).get('commit', '?')})", flush=True)
        new = run(old["spec"], "verify")
        differ = [f for f in COMPARED if old.get(f) != new.get(f)]
        for f in differ:
            show = (lambda v: v) if not f.startswith("correct_") else (lambda v: f"{str(v)[:16]}…")
            print(f"   {f}: recorded {show(old.get(f))}, now {show(new.get(f))}")
        print("   reproduced exactly" if not differ else f"   DIFFERS in {len(differ)} fields")
        failed += bool(differ)
    print(f"{k - failed} of {k} records reproduced exactly")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", default=["main"])
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2; with --stale/--here every recorded seed")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--variant-bits", nargs="+", type=int, help="weight bits of the variants suite (default: 3; "
                        "with --stale/--here every recorded width)")
    parser.add_argument("--force", action="store_true", help="rerun records that already exist")
    parser.add_argument("--stale", action="store_true", help="rerun records that do not hold for the working "
                        "tree (benchmarks.fingerprint.holds; resumable: a rerun record holds)")
    parser.add_argument("--here", action="store_true", help="rerun records not measured on this platform with the "
                        "working tree's fingerprint (a table of one kind of CPU; implies --stale)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--verify", type=int, metavar="K", help="rerun K records chosen at random and compare their "
                        "per-image correctness exactly (exit 1 on any difference); writes nothing")
    args = parser.parse_args()
    stored = load()
    if args.verify:
        raise SystemExit(verify(stored["records"], args.verify))
    if not args.report_only:
        import torch
        threads = f"{torch.get_num_threads()} threads"
        now = fingerprint() if args.stale or args.here else None
        # the seeds and widths the chosen suites recorded (another suite's would add settings no table cites)
        recorded = [r["spec"] for r in stored["records"].values() if r["spec"]["suite"] in args.suite]
        seeds = args.seeds or (sorted({r["seed"] for r in recorded}) if now else [0, 1, 2])
        bits = args.variant_bits or (sorted({r["w_bits"] for r in recorded if r["suite"] == "variants"}) if now else [3])
        wanted = [s for s in specs(args.suite, seeds, args.variants, bits) if s["ref"] in args.models]
        todo = to_run(wanted, stored["records"], now, args.here, args.force)
        if now is not None and (new := sum(key(s) not in stored["records"] for s in wanted)):
            print(f"{new} of these settings have no record: --stale/--here rerun records only (run without them "
                  "to add those)", flush=True)
        for spec in todo:
            print(f"== {key(spec)}", flush=True)
            record = run(spec, threads)
            record["machine"] = machine()
            stored = load()  # merge with records another process may have written meanwhile
            old = stored["records"].get(key(spec))
            if old is not None and not is_current(old):
                stored["superseded"].append(old)
            stored["records"][key(spec)] = record
            write_json("accuracy", derived(stored))
    if derived(dict(stored)) != stored:  # records from before the paired statistics or the preset
        write_json("accuracy", derived(stored))
    plot(stored["records"])
    update_section("accuracy")
    print(report(stored["records"]))

if __name__ == "__main__":
    main()
