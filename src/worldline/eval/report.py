"""The HTML report: headline numbers, prediction tables and curves, rollouts, training curves, configs.

One folder, self-contained: ``index.html`` with inline CSS, PNG figures beside it and the rollout gifs
copied in (or referenced where they already live inside the folder), all by relative paths, so the
folder can be zipped, mailed or served as is.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_file, atomic_path

LABELS = {"model": "model", "copy_last": "copy last frame", "shuffled_actions": "model, shuffled actions",
          "tokenizer": "tokenizer reconstruction"}
COLOURS = {"model": "#1f77b4", "copy_last": "#7f7f7f", "shuffled_actions": "#ff7f0e", "tokenizer": "#2ca02c"}
SKIP_KEYS = {"step", "split", "time", "epoch", "lr", "grad_norm", "steps_per_s", "samples_per_s"}  # bookkeeping, not quality
PREFERRED = ("psnr", "ssim", "mse", "tf_mse", "rollout_mse")  # shown first when a run logs them
MAX_PANELS = 4  # loss plus up to three other logged quantities per run

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #dde1e7; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
.sub { color: #5b6472; margin-bottom: 18px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 12px 16px; min-width: 180px; }
.card .v { font-size: 22px; font-weight: 600; } .card .k { color: #5b6472; font-size: 13px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #dde1e7; padding: 4px 9px; text-align: right; } th { background: #eef1f5; }
td:first-child, th:first-child { text-align: left; }
.good { color: #137333; font-weight: 600; } .bad { color: #b3261e; }
img.fig { max-width: 100%; background: #fff; border: 1px solid #dde1e7; border-radius: 6px; }
.gifs { display: flex; flex-wrap: wrap; gap: 16px; } .gifs figure { margin: 0; background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px; }
.gifs img { image-rendering: pixelated; display: block; } figcaption { font-size: 12px; color: #5b6472; margin-top: 6px; }
pre { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px; font-size: 12px; overflow-x: auto; }
.note { color: #5b6472; font-size: 13px; }
"""


def write_report(out_dir: str | os.PathLike, *, runs: dict[str, str | os.PathLike] | None = None,
                 prediction: dict[str, Any] | None = None, tokenizer_eval: dict[str, Any] | None = None,
                 rollouts: Sequence[str | os.PathLike] = (), title: str = "worldline report",
                 timings: dict[str, float] | None = None, sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write ``out_dir/index.html`` (and its figures) from training runs and evaluation results.

    ``sections``: extra (title, html) pairs from other areas (e.g. planning), placed before Training;
    their html refers to files inside ``out_dir`` by relative paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    parts = [f"<h1>{_e(title)}</h1>", '<div class="sub">worldline report</div>']

    parts.append(_headline(prediction, tokenizer_eval, timings))
    if prediction:
        parts.append("<h2>Prediction on held-out episodes</h2>")
        parts.append(
            f'<p class="note">{prediction["num_windows"]} windows from {len(prediction.get("episode_ids", []))} '
            f'held-out episodes; the model sees {prediction["context"]} real frames and the real actions and '
            f'predicts {prediction["horizon"]}. PSNR is capped at {prediction.get("psnr_cap_db", 100):g} dB for identical '
            f"frames. Shuffled actions: the same model given another window's actions, so the gap is what the "
            f"actions are worth.</p>")
        fig = _prediction_figure(prediction, out / "figures" / "prediction.png")
        parts.append(f'<img class="fig" src="{_rel(fig, out)}" alt="prediction quality per horizon step">')
        parts.append(_prediction_table(prediction))
    if rollouts:
        parts.append("<h2>Rollouts</h2>")
        parts.append('<p class="note">Left: the real episode. Right: the model; grey frame = real context, '
                     "red frame = predicted from the context and the real actions.</p>")
        parts.append(_rollouts(rollouts, out))
    if tokenizer_eval:
        parts.append("<h2>Tokenizer</h2>")
        parts.append(_tokenizer_tables(tokenizer_eval))
    for heading, body in sections:
        parts.append(f"<h2>{_e(heading)}</h2>")
        parts.append(body)
    if runs:
        parts.append("<h2>Training</h2>")
        for name, run_dir in runs.items():
            parts.append(_run_section(name, Path(run_dir), out))

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")
    index = out / "index.html"
    with atomic_file(index, "w") as f:
        f.write(page)
    return index


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def _headline(prediction, tokenizer_eval, timings) -> str:
    cards = []
    if prediction:
        m, c, s = prediction["model"], prediction["copy_last"], prediction["shuffled_actions"]
        H = prediction["horizon"]
        cards += [
            _card(f"{m['psnr_mean']:.2f} dB", f"model PSNR, mean over {H} steps"),
            _card(f"{c['psnr_mean']:.2f} dB", "copy last frame PSNR"),
            _card(f"{s['psnr_mean']:.2f} dB", "shuffled actions PSNR"),
            _card(f"{m['ssim_mean']:.3f}", f"model SSIM (copy last {c['ssim_mean']:.3f})"),
        ]
        beats = prediction.get("beats_copy_last", {}).get("psnr_steps", [])
        cards.append(_card(f"{len(beats)}/{H}", "steps where the model beats copy-last (PSNR)"))
        if prediction.get("tokenizer"):
            cards.append(_card(f"{prediction['tokenizer']['psnr_mean']:.2f} dB", "tokenizer ceiling PSNR"))
    for name, res in (tokenizer_eval or {}).items():
        if isinstance(res, dict) and _num(res.get("psnr")) and _num(res.get("ssim")):
            cards.append(_card(f"{res['psnr']:.2f} dB", f"tokenizer PSNR ({name}), SSIM {res['ssim']:.3f}"))
    if timings and _num(timings.get("total")):
        cards.append(_card(f"{timings['total'] / 60:.1f} min", "total time"))
    html_ = f'<div class="cards">{"".join(cards)}</div>' if cards else ""
    if timings:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{v:.1f} s</td></tr>" for k, v in timings.items() if _num(v))
        html_ += f"<h3>Time per stage</h3><table><tr><th>stage</th><th>time</th></tr>{rows}</table>"
    return html_


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="v">{_e(value)}</div><div class="k">{_e(label)}</div></div>'


def _prediction_table(prediction: dict[str, Any]) -> str:
    methods = [m for m in LABELS if prediction.get(m)]
    head = "".join(f"<th>{_e(LABELS[m])}</th>" for m in methods)
    parts = []
    for key, fmt, unit in (("psnr", "{:.2f}", "PSNR (dB)"), ("ssim", "{:.3f}", "SSIM")):
        rows = []
        copy = prediction["copy_last"][key]
        for t in range(prediction["horizon"]):
            rows.append(_pred_row(str(t + 1), [prediction[m][key][t] for m in methods], methods, copy[t], fmt))
        rows.append(_pred_row("mean", [prediction[m][f"{key}_mean"] for m in methods], methods,
                              prediction["copy_last"][f"{key}_mean"], fmt, bold=True))
        parts.append(f"<h3>{unit} per horizon step</h3><table><tr><th>step</th>{head}</tr>{''.join(rows)}</table>")
    return "".join(parts)


def _pred_row(label, values, methods, copy, fmt, bold=False) -> str:
    cells = []
    for m, v in zip(methods, values):
        cls = ""
        if m == "model":
            cls = ' class="good"' if v > copy else ' class="bad"'
        cells.append(f"<td{cls}>{fmt.format(v)}</td>")
    label = f"<b>{label}</b>" if bold else label
    return f"<tr><td>{label}</td>{''.join(cells)}</tr>"


def _rollouts(paths: Sequence[str | os.PathLike], out: Path) -> str:
    figures = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise WorldlineError(f"rollout file not found: {p}")
        local = p if _inside(p, out) else _copy_in(p, out / "rollouts")
        caption = p.stem.replace("_", " ")
        extra = ""
        metrics = p.with_suffix(".json")
        if metrics.is_file():
            try:
                m = json.loads(metrics.read_text())
                caption += f" (from frame {m['start']}): mean PSNR {sum(m['psnr']) / len(m['psnr']):.2f} dB, " \
                           f"copy-last {sum(m['copy_last_psnr']) / len(m['copy_last_psnr']):.2f} dB"
            except (ValueError, KeyError, ZeroDivisionError):
                pass
        mp4 = p.with_suffix(".mp4")
        if mp4.is_file():
            local_mp4 = mp4 if _inside(mp4, out) else _copy_in(mp4, out / "rollouts")
            extra = f' &middot; <a href="{_rel(local_mp4, out)}">mp4</a>'
        figures.append(f'<figure><img src="{_rel(local, out)}" alt="{_e(p.stem)}">'
                       f"<figcaption>{_e(caption)}{extra}</figcaption></figure>")
    return f'<div class="gifs">{"".join(figures)}</div>'


def _tokenizer_tables(tokenizer_eval: dict[str, Any]) -> str:
    """One metric/value table per evaluated source; lists of records (e.g. per clip) get their own table."""
    parts = []
    for name, res in tokenizer_eval.items():
        flat = _flatten(res) if isinstance(res, dict) else {name: res}
        records = {k: v for k, v in flat.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v))}</td></tr>" for k, v in flat.items() if k not in records)
        parts.append(f"<h3>{_e(name)}</h3><table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
        for key, items in records.items():
            cols = list(dict.fromkeys(c for item in items for c in item))
            head = "".join(f"<th>{_e(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(item.get(c, '')))}</td>" for c in cols) + "</tr>" for item in items)
            parts.append(f'<p class="note">{_e(name)}: {_e(key)}</p><table><tr>{head}</tr>{body}</table>')
    return "".join(parts)


def _run_section(name: str, run_dir: Path, out: Path) -> str:
    parts = [f"<h3>{_e(name)}</h3>"]
    records = read_metrics(run_dir / "metrics.jsonl")
    if records:
        slug = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "run"
        fig = _curves_figure(name, records, out / "figures" / f"curves_{slug}.png")
        parts.append(f'<img class="fig" src="{_rel(fig, out)}" alt="training curves of {_e(name)}">')
        last = {split: [r for r in records if r.get("split") == split] for split in ("train", "val")}
        summary = ", ".join(f"last {s} loss {rs[-1]['loss']:.4g} at step {rs[-1].get('step')}"
                            for s, rs in last.items() if rs and _num(rs[-1].get("loss")))
        if summary:
            parts.append(f'<p class="note">{_e(summary)}</p>')
    else:
        parts.append(f'<p class="note">no metrics.jsonl in {_e(str(run_dir))}</p>')
    config = run_dir / "config.yaml"
    if config.is_file():
        parts.append(f"<details><summary>run config</summary><pre>{_e(config.read_text())}</pre></details>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------
# figures (matplotlib, Agg)
# ----------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a run's metrics.jsonl; a torn last line (killed writer) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    return records


def _curves_figure(name: str, records: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    keys = ["loss"] + _panel_keys(records)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split, style in (("train", "-"), ("val", "o-")):
            pts = [(r["step"], r[key]) for r in records if r.get("split") == split and _num(r.get(key))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=split, markersize=3, linewidth=1.2)
        values = [r[key] for r in records if _num(r.get(key))]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(name, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _panel_keys(records: list[dict[str, Any]]) -> list[str]:
    """Logged quantities beside the loss: preferred quality metrics first, then those validated,
    then the rest, alphabetically within each group."""
    logged = {k for r in records for k, v in r.items() if k not in SKIP_KEYS and k != "loss" and _num(v)}
    validated = {k for r in records if r.get("split") == "val" for k in r}
    rank = lambda k: (PREFERRED.index(k) if k in PREFERRED else len(PREFERRED), k not in validated, k)  # noqa: E731
    return sorted(logged, key=rank)[: MAX_PANELS - 1]


def _prediction_figure(prediction: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = list(range(1, prediction["horizon"] + 1))
    for ax, key, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for m in LABELS:
            if prediction.get(m):
                ax.plot(steps, prediction[m][key], "o-" if m == "model" else "--", color=COLOURS[m],
                        label=LABELS[m], markersize=3, linewidth=1.5 if m == "model" else 1.1)
        ax.set_xlabel("horizon step", fontsize=9)
        ax.set_title(unit, fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed; safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def _e(text: Any) -> str:
    return html.escape(str(text))


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        shown = ", ".join(_fmt(x) for x in v[:8])
        return f"[{shown}{', ...' if len(v) > 8 else ''}]"
    return str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _inside(p: Path, folder: Path) -> bool:
    try:
        p.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _copy_in(p: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / p.name
    if not dest.exists() or dest.stat().st_size != p.stat().st_size or dest.stat().st_mtime < p.stat().st_mtime:
        with atomic_path(dest) as tmp:
            shutil.copyfile(p, tmp)
    return dest


def _rel(p: Path, out: Path) -> str:
    return Path(os.path.relpath(p.resolve(), out.resolve())).as_posix()
