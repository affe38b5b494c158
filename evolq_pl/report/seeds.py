"""A seed sweep's records and summary (no Lightning). A sweep keeps each seed in ``<out>/seed<k>/``: ``run.json``
(the settings it runs, written by ``evolq-pl seeds``) and ``results.json`` (written by its ``fit``).

From the results, ``summary.csv`` and ``summary.md`` with mean ± std (sample std, ddof = 1) per metric, and in
``summary.md`` the paired comparison of Evol-Q with the calibrated init: the mean top-1 difference over seeds with
its 95 % t interval, and the exact McNemar test on per-image correctness pooled over seeds (a gain is claimed only
where the interval lies above zero). Everything here takes paths and plain records, so a sweep run elsewhere (a
cluster scheduler, ``--print_commands``) is checked and summarised the same way.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from evolq_pl.errors import EvolQError
from evolq_pl.io import write_csv_atomic, write_text_atomic
from evolq_pl.report.stats import compare_runs, describe, verdict

# what the seeds of one sweep differ in by design, as patterns over fit's flattened config: the seeds, where a run
# writes (``--run_dir`` replaces the config's folders) and the options that only steer a restart
PER_SEED = ("seed_everything", "model.init_args.search.seed", "data.init_args.seed", "run_dir", "ckpt_path",
            "overwrite", "trainer.default_root_dir", "model.init_args.output_dir", "trainer.logger.init_args.save_dir",
            "trainer.logger.*.init_args.save_dir", "trainer.callbacks.*.init_args.dirpath")
METRICS = ("top1_float", "top1_init", "top1_evolq", "top5_float", "top5_init", "top5_evolq", "fitness_init",
           "fitness_final", "fitness_gain", "evaluations", "search_seconds")
# summary.md's digits by the metric's first word: the fitness moves in its 4th-6th significant digit
METRIC_FORMAT = {"top1": ".2f", "top5": ".2f", "fitness": ".6f", "evaluations": ".0f", "search": ".1f"}


class SeedsError(EvolQError):
    """A seed sweep that cannot go on as asked (its folder, its results, its settings): one line."""


def seed_dir(out: Path, seed: int) -> Path:
    """Where a sweep keeps everything of one seed (logs, checkpoints, results.json)."""
    return out / f"seed{seed}"


def json_object(path: Path, remedy: str) -> dict[str, Any]:
    """A JSON object file of a sweep; a damaged one (not JSON, or not an object) is named in one line with
    ``remedy``."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SeedsError(f"{path} is damaged (not JSON: {err}); {remedy}") from None
    if not isinstance(data, dict):
        raise SeedsError(f"{path} is damaged (a JSON {type(data).__name__}, not an object); {remedy}")
    return data


def read_results(path: Path) -> dict[str, Any]:
    """A seed's results.json."""
    return json_object(path, "delete it and rerun that seed")


def finished(out: Path, seed: int) -> bool:
    """results.json written with every measurement (one listing ``missing`` is rerun: it resumes)."""
    path = seed_dir(out, seed) / "results.json"
    return path.exists() and "missing" not in read_results(path)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b.0.c": leaf}`` (an empty list or mapping is a leaf): one key per setting, so two
    configs compare key by key and a difference is named by its path."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    flat = {k: v for key, child in children for k, v in flatten(child, f"{prefix}{key}.").items()}
    return flat or {prefix.rstrip("."): node}


def sweep_settings(config: dict[str, Any]) -> dict[str, Any]:
    """fit's resolved config as one sweep's settings: flattened, without what differs per seed (``PER_SEED``),
    in the JSON form run.json stores (so stored and fresh settings compare equal)."""
    kept = {k: v for k, v in flatten(config).items() if not any(fnmatchcase(k, p) for p in PER_SEED)}
    return json.loads(json.dumps(kept, default=str))


def differences(there: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key=<value there> there, <value now> now`` for each setting that differs (``unset`` where one lacks it)."""
    shown = lambda settings, key: repr(settings[key]) if key in settings else "unset"  # noqa: E731
    return [f"{k}={shown(there, k)} there, {shown(now, k)} now" for k in sorted(there.keys() | now.keys())
            if k not in there or k not in now or there[k] != now[k]]


def legacy_fingerprint(configs: list[str], extra: list[str]) -> str:
    """How a run.json written before settings were compared by value names its settings: the config files'
    contents and the extra arguments as given (such a folder still resumes under the same command)."""
    h = hashlib.sha256()
    for c in configs:
        h.update(Path(c).read_bytes())
    h.update(json.dumps(extra).encode())
    return h.hexdigest()[:16]


def refuse_other_settings(marker: Path, out: Path, configs: list[str], extra: list[str],
                          settings: dict[str, Any]) -> None:
    """A seed folder whose run.json records other settings is refused, naming the first settings that differ."""
    stored = json_object(marker, f"delete {marker.parent} to rerun that seed")  # what ``mark`` wrote
    if "settings" in stored:
        differ = differences(stored["settings"], settings)
    else:  # written before settings were compared by value: the arguments as given
        differ = [] if stored.get("fingerprint") == legacy_fingerprint(configs, extra) else [
            f"configs {stored.get('configs')} with arguments {stored.get('extra')} there, {configs} with {extra} "
            "now, or a config file changed since"]
    if differ:
        more = f"; {len(differ) - 3} more" if len(differ) > 3 else ""
        raise SeedsError(f"--out={str(out)!r}: {marker.parent} holds a run of other settings "
                         f"({'; '.join(differ[:3])}{more}); use another --out or delete that folder")


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded settings without its search seed (the one setting the seeds of a sweep differ in)."""
    search = {k: v for k, v in settings.get("search", {}).items() if k != "seed"}
    return {**settings, "search": search}


def label(run: dict[str, Any]) -> str:
    """``model WxAy`` of a run, as the summary's title and the refusal of mixed runs name it."""
    return f"{run.get('model')} W{run.get('w_bits')}A{run.get('a_bits')}"


def load_runs(out: Path, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """Per-seed results; refuses missing seeds and seeds whose settings differ (model, bits, search, calib size)."""
    missing = [s for s in seeds if not (seed_dir(out, s) / "results.json").exists()]
    if missing:
        raise SeedsError(f"no results.json for seed(s) {missing} under --out={str(out)!r}; run them first "
                         "(without --summary_only) or leave them out of --seeds")
    runs = {s: read_results(seed_dir(out, s) / "results.json") for s in seeds}
    partial = {s: r["missing"] for s, r in runs.items() if "missing" in r}
    if partial:
        raise SeedsError(f"seed(s) {sorted(partial)} lack measurements {partial}; rerun them (without --summary_only)")
    first = runs[seeds[0]]
    for s, r in runs.items():
        if comparable(r.get("settings", {})) != comparable(first.get("settings", {})):
            raise SeedsError(f"seed {s} ran with other settings than seed {seeds[0]} ({label(r)} vs {label(first)}); "
                             "they are not averaged")
    return runs


def metric_value(run: dict[str, Any], metric: str) -> float | None:
    """A results.json value, or ``fitness_gain`` (init − final: what the search moved)."""
    if metric == "fitness_gain":
        init, final = run.get("fitness_init"), run.get("fitness_final")
        return None if init is None or final is None else init - final
    return run.get(metric)


def summary_rows(runs: dict[int, dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Mean, sample std (ddof = 1; 0 for one seed) and per-seed value of each metric every run has."""
    rows = []
    for metric in METRICS:
        values = [metric_value(r, metric) for r in runs.values() if metric_value(r, metric) is not None]
        if len(values) == len(runs):
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append({"metric": metric, "mean": statistics.mean(values), "std": std,
                         **{f"seed{s}": metric_value(runs[s], metric) for s in seeds}})
    return rows


def paired_line(p: dict[str, Any] | None) -> str:
    """The sentence on Evol-Q − init: interval, McNemar counts where stored, and whether a gain is claimed."""
    if p is None:
        return "No paired comparison: a run lacks the init or the Evol-Q top-1."
    counts = f" ({p['only_new']} images only Evol-Q gets right, {p['only_base']} only init, pooled over " \
             "seeds)" if "mcnemar_p" in p else ""
    return (f"Evol-Q − init, top-1, paired over {p['n_seeds']} seeds (mean [95 % t interval, ddof = 1]): "
            f"{describe(p)}{counts}: {verdict(p)}.")


def summary_markdown(title: str, rows: list[dict[str, Any]], seeds: list[int], paired: dict[str, Any] | None,
                     files: list[Path]) -> str:
    """summary.md: the metrics table in the digits each metric moves in, the paired sentence, the per-seed files."""
    lines = [f"# {title}, seeds {', '.join(map(str, seeds))}", "",
             "| metric | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for r in rows:
        f = METRIC_FORMAT[r["metric"].split("_")[0]]
        lines.append(f"| {r['metric']} | {r['mean']:{f}} ± {r['std']:{f}} | "
                     + " | ".join(f"{r[f'seed{s}']:{f}}" for s in seeds) + " |")
    lines += ["", "std: sample standard deviation over seeds (ddof = 1).", "", paired_line(paired),
              "Per-seed files: " + ", ".join(map(str, files))]
    return "\n".join(lines) + "\n"


def summarise(out: Path, seeds: list[int]) -> dict[str, Any]:
    """Read ``<out>/seed<k>/results.json``; write summary.md / summary.csv with mean ± std (ddof = 1)."""
    runs = load_runs(out, seeds)
    rows = summary_rows(runs, seeds)
    # summary.csv: every digit of each row (summary.md rounds), for a spreadsheet or a later script
    write_csv_atomic(out / "summary.csv", rows, ["metric", "mean", "std", *(f"seed{s}" for s in seeds)])
    paired = compare_runs([runs[s] for s in seeds])
    files = [seed_dir(out, s) / "results.json" for s in seeds]
    write_text_atomic(out / "summary.md", summary_markdown(label(runs[seeds[0]]), rows, seeds, paired, files))
    return {"rows": rows, "runs": runs, "paired": paired}
