"""Every Altair chart the app draws, built here and nowhere else.

Each function takes a plain table (a pandas DataFrame or the dict a library function returned) and
returns an Altair chart; pages only place it (`st.altair_chart(charts.curves(...))`), the CLI saves
it, tests read its spec. The tables come from the modules that compute them: `report` (curves,
confusion, ROC points), `compare` (sweeps, repeats), `analysis` (ANN vs CNN), `lr_finder`,
`classview`, `mismatch`, `attribution`, `explain_report`, `roar`, `adapt`, `data.stats`.

One colour per split on every chart (report.SPLIT_COLOURS): train blue, train-dev teal,
val (site A) orange, test (site B) red.
"""
from __future__ import annotations

import importlib.util
import io
from typing import Iterable, Mapping

import altair as alt
import pandas as pd

from explore.insight.classview import _axis_floor
from explore.insight.compare import LOG_SCALE_SETTINGS, RESULT_METRICS, SPLITS, SWEEP_SETTINGS
from explore.insight.report import LR_METRIC, SPLIT_COLOURS, SPLIT_LABELS, SPLIT_ORDER


def _split_colours(keys: Iterable[str]) -> list[str]:
    return [SPLIT_COLOURS.get(key, "#999999") for key in keys]


# ----- one run or several: curves, learning rate, confusion, ROC -------------------------------
def curves(frame: pd.DataFrame, metric: str, splits: Iterable[str] = SPLIT_ORDER, by_run: bool | None = None,
           title: str | None = None) -> alt.Chart:
    """One metric ("loss" or "accuracy") over epochs, from a curves frame (`report.curves_frame`,
    `report.curves_for` or `compare.curves`: columns epoch, split, metric, value, run).

    One run: colour = split (train blue, val orange, test red), a dot per epoch. Several runs, or
    `by_run=True` (the Compare page: a run keeps its colour as others are added): colour = run, line
    style = split (train solid, val dashed, test dotted), the run legend below the chart.
    `splits`: the splits to draw.
    """
    data = frame[(frame["metric"] == metric) & frame["split"].isin(list(splits))].copy()
    data["split"] = data["split"].map(lambda s: SPLIT_LABELS.get(s, s))
    present = [SPLIT_LABELS[s] for s in SPLIT_ORDER if SPLIT_LABELS[s] in set(data["split"])]
    by_run = data["run"].nunique() > 1 if by_run is None else by_run
    y_axis = alt.Axis(format="%") if metric == "accuracy" else alt.Axis()
    encodings = {
        "x": alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="d", tickMinStep=1)),
        "y": alt.Y("value:Q", title=metric, axis=y_axis, scale=alt.Scale(zero=False)),
        "tooltip": [alt.Tooltip("run:N"), alt.Tooltip("split:N"), alt.Tooltip("epoch:Q"),
                    alt.Tooltip("value:Q", title=metric, format=".4f")],
    }
    title = title or f"{metric} per epoch"
    if not by_run:
        encodings["color"] = alt.Color("split:N", title="split", sort=present, scale=alt.Scale(
            domain=present, range=_split_colours(s for s in SPLIT_ORDER if SPLIT_LABELS[s] in present)))
        return alt.Chart(data).mark_line(point=True).encode(**encodings).properties(height=260, title=title)
    dashes = {SPLIT_LABELS[s]: d for s, d in zip(SPLIT_ORDER, ([1, 0], [2, 2], [6, 3], [1, 3]))}
    # tableau10: ten clearly different hues (the default theme's blues are hard to tell apart)
    encodings["color"] = alt.Color("run:N", title="run", scale=alt.Scale(scheme="tableau10"),
                                   legend=alt.Legend(orient="bottom", columns=1, labelLimit=600))
    base = alt.Chart(data).encode(**encodings)
    # Lines carry the dash style (so the split legend shows dashes); dots mark each epoch.
    lines = base.mark_line().encode(strokeDash=alt.StrokeDash(
        "split:N", title="split", sort=present, scale=alt.Scale(domain=present, range=[dashes[p] for p in present]),
        legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2)))
    dots = base.mark_circle(size=36)
    # Streamlit's theme fits title, axes and the legend (one line per run) into `height`.
    return (lines + dots).properties(title=title, height=340 + 22 * data["run"].nunique())


def roc(frame: pd.DataFrame, aucs: Mapping[str, float | None] | None = None, points: pd.DataFrame | None = None,
        titles: Mapping[str, str] = SPLIT_LABELS, title: str = "ROC curve (disease vs normal)",
        legend_below: bool = False, height: int = 300) -> alt.Chart:
    """ROC curves per split (`report.roc_frame`: split, fpr, tpr, threshold, the split named by
    `titles`) with the chance diagonal; each split's AUC in the legend when `aucs` is given, and
    `points` (split, fpr, tpr) drawn as dots, e.g. where the chosen threshold sits on each curve."""
    keys = [key for key in SPLIT_ORDER if titles.get(key) in set(frame["split"])]
    names = {titles[key]: titles[key] + (f" · AUC {aucs[key]:.3f}" if aucs and aucs.get(key) is not None else "")
             for key in keys}
    data = frame.assign(curve=frame["split"].map(names))
    data["threshold"] = data["threshold"].astype(float).where(data["threshold"] != float("inf"), None)
    legend = (alt.Legend(orient="bottom", labelLimit=400) if legend_below else
              alt.Legend(orient="bottom-right", fillColor="white", padding=6, labelLimit=300))
    colour = alt.Color("curve:N", title=None, legend=legend,
                       scale=alt.Scale(domain=[names[titles[k]] for k in keys], range=_split_colours(keys)))
    layers = [alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="fpr:Q", y="tpr:Q")]
    layers.append(alt.Chart(data).mark_line(interpolate="step-after").encode(
        x=alt.X("fpr:Q", title="false-positive rate (1 − specificity)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true-positive rate (sensitivity)", scale=alt.Scale(domain=[0, 1])),
        color=colour, tooltip=["split", alt.Tooltip("fpr:Q", format=".3f"), alt.Tooltip("tpr:Q", format=".3f"),
                               alt.Tooltip("threshold:Q", format=".3f")]))
    if points is not None and len(points):
        layers.append(alt.Chart(points.assign(curve=points["split"].map(names))).mark_point(size=90, filled=True).encode(
            x="fpr:Q", y="tpr:Q", color=colour, tooltip=["split", alt.Tooltip("fpr:Q", format=".3f"),
                                                         alt.Tooltip("tpr:Q", format=".3f")]))
    return alt.layer(*layers).properties(title=title, height=height)


def learning_rate(frame: pd.DataFrame, height: int = 240) -> alt.Chart:
    """The learning rate of every epoch, drawn under the loss curves (Train and Compare pages).

    A step line on a log axis: StepLR shows its staircase, exponential decay a straight slope,
    cosine a half wave. Takes either curves frame (report.curves_frame or compare.curves).
    """
    data = frame[frame["metric"] == LR_METRIC]
    several_runs = data["run"].nunique() > 1
    encodings = {
        "x": alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="d", tickMinStep=1)),
        "y": alt.Y("value:Q", title="learning rate", scale=alt.Scale(type="log"), axis=alt.Axis(format="~e")),
        "tooltip": [alt.Tooltip("run:N"), alt.Tooltip("epoch:Q"), alt.Tooltip("value:Q", title="lr", format=".3~e")],
    }
    if several_runs:
        encodings["color"] = alt.Color("run:N", title="run", scale=alt.Scale(scheme="tableau10"), legend=None)
    else:
        encodings["color"] = alt.value(SPLIT_COLOURS["train"])
    chart = alt.Chart(data).mark_line(interpolate="step-after", point=True).encode(**encodings)
    return chart.properties(height=height, title="learning rate per epoch")


def confusion(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Heatmap with the count written in each cell; colour = share of the true class."""
    order = list(dict.fromkeys(frame["true"]))
    cell_px = 80 if len(order) <= 2 else 56  # three classes fit the same column
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=order, title="predicted", axis=alt.Axis(labelAngle=0 if cell_px == 80 else -35)),
        y=alt.Y("true:N", sort=order, title="true"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("share of true class:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), legend=None),
        tooltip=["true", "predicted", "count", alt.Tooltip("share of true class:Q", format=".1%")])
    text = base.mark_text(fontSize=16).encode(
        text="count:Q",
        color=alt.condition(alt.datum["share of true class"] > 0.5, alt.value("white"), alt.value("black")))
    # "pad": the natural size (80 × 52 px per cell), not squeezed to fit a narrow column.
    return (cells + text).properties(title=title, width=alt.Step(cell_px), height=alt.Step(52 if cell_px == 80 else 40),
                                     autosize=alt.AutoSizeParams(type="pad"))


# ----- multi-label runs: one line per finding (explore/insight/multilabel_report.py makes the tables) -----------
def finding_auc(frame: pd.DataFrame, height: int = 260) -> alt.Chart:
    """AUC per epoch, colour = finding. One run: line style = split; several runs: line style = run."""
    several_runs = frame["run"].nunique() > 1
    if several_runs:
        frame = frame[frame["split"] == SPLIT_LABELS["val"]]
    dash = "run:N" if several_runs else "split:N"
    return alt.Chart(frame).mark_line(point=not several_runs).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("AUC:Q", title="AUC" + (" (val)" if several_runs else ""), scale=alt.Scale(zero=False)),
        color=alt.Color("task:N", title="finding", scale=alt.Scale(scheme="category10")),
        strokeDash=alt.StrokeDash(dash, title="run" if several_runs else "split",
                                  legend=alt.Legend(labelLimit=260)),
        tooltip=["run:N", "split:N", "task:N", "epoch:Q", alt.Tooltip("AUC:Q", format=".3f")],
    ).properties(height=height, title="AUC per finding, per epoch")


def finding_roc(frame: pd.DataFrame, split: str) -> alt.Chart:
    """The ROC curve of every finding on one split (multilabel_report.roc_frame), colour = finding."""
    curves = alt.Chart(frame).mark_line(interpolate="step-after").encode(
        x=alt.X("fpr:Q", title="false-positive rate", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true-positive rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("task:N", title=None, scale=alt.Scale(scheme="category10"),
                        legend=alt.Legend(orient="bottom-right", fillColor="white", labelLimit=300)))
    chance = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="fpr:Q", y="tpr:Q")
    return (chance + curves).properties(title=f"ROC per finding · {SPLIT_LABELS.get(split, split)}", height=300)


# ----- comparing runs: sweeps and repeats ------------------------------------------------------
def sweep(results: pd.DataFrame, settings: list[str], metric: str = "test_acc") -> alt.Chart:
    """The final metric against the first swept value (log axis for rates), one line per second value."""
    x_setting = settings[0]
    data = results.dropna(subset=[metric])
    positive = bool(len(data)) and bool((data[x_setting] > 0).all())
    scale = alt.Scale(type="log") if x_setting in LOG_SCALE_SETTINGS and positive else alt.Scale(zero=False)
    encoding = dict(
        # on/off settings (batch norm) are two categories, not a number line
        x=(alt.X(f"{x_setting}:N", title=SWEEP_SETTINGS[x_setting][0]) if SWEEP_SETTINGS[x_setting][1] is bool
           else alt.X(f"{x_setting}:Q", title=SWEEP_SETTINGS[x_setting][0], scale=scale)),
        y=alt.Y(f"{metric}:Q", title=metric.replace("_", " "), axis=alt.Axis(format="%"),
                scale=alt.Scale(zero=False)),
        tooltip=["run", *settings, alt.Tooltip(f"{metric}:Q", format=".3f")],
    )
    if len(settings) > 1:
        encoding["color"] = alt.Color(f"{settings[1]}:N", title=SWEEP_SETTINGS[settings[1]][0])
    return alt.Chart(data, title=f"{metric.replace('_', ' ')} against the {SWEEP_SETTINGS[x_setting][0]}").mark_line(
        point=alt.OverlayMarkDef(size=80)).encode(**encoding).properties(height=360)


def repeat_band(band: pd.DataFrame, metric: str = "accuracy") -> alt.Chart:
    """Mean curve per split with a ±1 std band."""
    data = band[band["metric"] == metric]
    fmt = "%" if metric == "accuracy" else ""
    base = alt.Chart(data).encode(x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
                                  color=alt.Color("split:N", sort=list(SPLITS)))
    band_layer = base.mark_area(opacity=0.25).encode(y=alt.Y("low:Q", title=f"{metric} (mean ± std)",
                                                             axis=alt.Axis(format=fmt), scale=alt.Scale(zero=False)),
                                                     y2="high:Q")
    line = base.mark_line(point=True).encode(y="mean:Q", tooltip=["split", "epoch", alt.Tooltip("mean:Q", format=".4f"),
                                                                  alt.Tooltip("std:Q", format=".4f"), "n"])
    return (band_layer + line).properties(title=f"{metric}: mean ± std over seeds", height=360)


def repeats(table: pd.DataFrame, metrics: Iterable[str] = RESULT_METRICS) -> alt.Chart:
    """Each seed's final metric as a dot, and the mean ± std as a bar, per metric."""
    long = table.melt(id_vars=["run"], value_vars=list(metrics), var_name="metric", value_name="value").dropna()
    dots = alt.Chart(long).mark_circle(size=70, opacity=0.6).encode(
        x=alt.X("value:Q", title="accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
        y=alt.Y("metric:N", title=None), tooltip=["run", "metric", alt.Tooltip("value:Q", format=".3f")])
    spread = alt.Chart(long).mark_errorbar(extent="stdev", thickness=2).encode(
        x=alt.X("value:Q"), y="metric:N")
    mean = alt.Chart(long).mark_tick(color="black", thickness=2, size=18).encode(x="mean(value):Q", y="metric:N")
    return (dots + spread + mean).properties(title="final metrics: each seed, mean and ±1 std", height=240)


# ----- the learning-rate range test ---------------------------------------------------------------
def lr_range_test(result: dict) -> alt.Chart:
    """Loss against learning rate (log axis), with the suggested rate marked."""
    frame = pd.DataFrame(result["points"], columns=["lr", "loss"])
    line = alt.Chart(frame).mark_line().encode(
        x=alt.X("lr:Q", title="learning rate", scale=alt.Scale(type="log"), axis=alt.Axis(format="~e")),
        y=alt.Y("loss:Q", title="training loss (smoothed)", scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip("lr:Q", format=".2~e"), alt.Tooltip("loss:Q", format=".4f")])
    layers = [line]
    if result.get("suggested_lr"):
        mark = pd.DataFrame({"lr": [result["suggested_lr"]], "label": [f"suggested {result['suggested_lr']:.1e}"]})
        rule = alt.Chart(mark).mark_rule(color="#e45756", strokeDash=[4, 3]).encode(x="lr:Q")
        text = alt.Chart(mark).mark_text(align="left", dx=4, dy=-110, color="#e45756").encode(x="lr:Q", text="label:N")
        layers += [rule, text]
    return alt.layer(*layers).properties(height=260, title="learning-rate range test")


# ----- ANN vs CNN (explore.insight.analysis) -------------------------------------------------------------
def model_cost(totals: pd.DataFrame, column: str = "params", log: bool = False) -> alt.Chart:
    """Horizontal bars of parameters or MACs per model; a log axis shows small models too."""
    titles = {"params": "parameters", "macs": "multiply-accumulates for one image",
              "first_layer_weights": "first-layer weights"}
    data = totals.dropna(subset=[column]).astype({column: "int64"})[["model", "family", column]]
    encoding = dict(
        x=alt.X(f"{column}:Q", title=titles.get(column, column), axis=alt.Axis(format="~s"),
                scale=alt.Scale(type="log") if log else alt.Scale()),
        y=alt.Y("model:N", sort=None, title=None), color=alt.Color("family:N", title="family"),
        tooltip=["model", alt.Tooltip(f"{column}:Q", format=",")])
    if log:  # a log axis has no zero: bars start at 1 instead
        encoding["x2"] = alt.datum(1)
    # Streamlit's theme fits the whole chart (title, axes, legend) into `height`: leave room for them.
    return alt.Chart(data, title=titles.get(column, column)).mark_bar().encode(**encoding).properties(
        height=110 + 40 * len(data))


def measured(table: pd.DataFrame, column: str) -> alt.Chart:
    titles = {"seconds_per_epoch": "training seconds per epoch", "images_per_second": "inference images per second",
              "peak_memory_mb": "peak memory (MB)"}
    data = table.dropna(subset=[column])
    return alt.Chart(data, title=titles.get(column, column)).mark_bar().encode(
        x=alt.X(f"{column}:Q", title=titles.get(column, column)), y=alt.Y("model:N", sort=None, title=None),
        tooltip=["model", alt.Tooltip(f"{column}:Q", format=",.2f")],
    ).properties(height=110 + 40 * len(data))


def model_accuracy(results: pd.DataFrame) -> alt.Chart:
    """Train / val / test accuracy of the newest finished run of each model, side by side."""
    newest = results.sort_values("created", ascending=False).drop_duplicates("model")
    long = newest.melt(id_vars=["model", "run", "params"], value_vars=["train_acc", "val_acc", "test_acc"],
                       var_name="split", value_name="accuracy").dropna()
    long["split"] = long["split"].str.removesuffix("_acc")
    return alt.Chart(long, title="accuracy of the newest finished run per model").mark_bar().encode(
        x=alt.X("split:N", sort=["train", "val", "test"], title=None),
        y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("split:N", sort=["train", "val", "test"]), column=alt.Column("model:N", title=None),
        tooltip=["model", "run", "split", alt.Tooltip("accuracy:Q", format=".1%"), alt.Tooltip("params:Q", format=",")],
    ).properties(width=110, height=220)


def translation(sensitivity: pd.DataFrame) -> alt.Chart:
    return alt.Chart(sensitivity, title="p(disease) as the image shifts").mark_line(point=True).encode(
        x=alt.X("shift_px:Q", title="shift (pixels)", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("prob:Q", title="predicted probability of disease", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", legend=alt.Legend(orient="bottom", columns=1, labelLimit=500)),
        tooltip=["model", "shift_px", alt.Tooltip("prob:Q", format=".3f"), alt.Tooltip("change:Q", format="+.3f")],
    ).properties(height=360 + 22 * sensitivity["model"].nunique())


def batch_size(timings: pd.DataFrame) -> alt.Chart:
    """Seconds per epoch against batch size; powers of two marked, so a (missing) jump would show."""
    line = alt.Chart(timings).mark_line(color="gray").encode(
        x=alt.X("batch_size:Q", title="batch size", scale=alt.Scale(zero=False)),
        y=alt.Y("seconds_per_epoch:Q", title="seconds per epoch", scale=alt.Scale(zero=True)))
    points = alt.Chart(timings).mark_point(size=90, filled=True).encode(
        x="batch_size:Q", y="seconds_per_epoch:Q",
        shape=alt.Shape("power_of_two:N", title="power of two"), color=alt.Color("power_of_two:N", title="power of two"),
        tooltip=["batch_size", "batches", alt.Tooltip("seconds_per_epoch:Q", format=".3f"),
                 alt.Tooltip("images_per_second:Q", format=",.0f")])
    return (line + points).properties(title="one training epoch at each batch size", height=360)


# ----- the instructor's class view ----------------------------------------------------------------
def class_scatter(runs: pd.DataFrame, color: str = "model", projector: bool = False) -> alt.Chart:
    """Val accuracy (site A) against test accuracy (site B), one dot per run, coloured by `color`
    ("model" or "preset"), with the diagonal: dots below it lost accuracy at the other hospital."""
    if color not in ("model", "preset", "session"):
        raise ValueError(f"colour by model, preset or session, not {color!r}")
    floor = _axis_floor(runs)
    scale = alt.Scale(domain=[floor, 1.0])
    size = 720 if projector else 460
    diagonal = alt.Chart(pd.DataFrame({"a": [floor, 1.0]})).mark_line(
        color="gray", strokeDash=[6, 4], strokeWidth=3 if projector else 1.5).encode(
        x=alt.X("a:Q", scale=scale), y=alt.Y("a:Q", scale=scale))
    label = alt.Chart(pd.DataFrame({"a": [floor + 0.62 * (1 - floor)], "text": ["same accuracy at both sites"]})).mark_text(
        angle=315, dy=-12, color="gray", fontSize=20 if projector else 11).encode(
        x=alt.X("a:Q", scale=scale), y=alt.Y("a:Q", scale=scale), text="text:N")
    dots = alt.Chart(runs).mark_circle(size=420 if projector else 110, opacity=0.75).encode(
        x=alt.X("val_acc:Q", title="val accuracy (site A, the training hospital)", scale=scale,
                axis=alt.Axis(format="%")),
        y=alt.Y("test_acc:Q", title="test accuracy (site B, another hospital)", scale=scale,
                axis=alt.Axis(format="%")),
        color=alt.Color(f"{color}:N", title=color),
        tooltip=["session", "name", "model", "preset", alt.Tooltip("val_acc:Q", format=".1%"),
                 alt.Tooltip("test_acc:Q", format=".1%"), "epochs", "image_size"])
    chart = (diagonal + label + dots).properties(width=size, height=size)
    fonts = (22, 26) if projector else (12, 14)
    return chart.configure_axis(labelFontSize=fonts[0], titleFontSize=fonts[1]).configure_legend(
        labelFontSize=fonts[0], titleFontSize=fonts[1], symbolSize=400 if projector else 100, labelLimit=420)


# ----- the Data page (tables from explore.data.stats) -------------------------------------------
def class_counts(counts: pd.DataFrame, splits: list[str], classes: list[str]) -> alt.Chart:
    """Images per split and class (`stats.class_counts`), the classes side by side in each split."""
    return alt.Chart(counts).mark_bar().encode(
        x=alt.X("split:N", sort=list(splits), title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("class:N", sort=list(classes)), y="count:Q",
        color=alt.Color("class:N", sort=list(classes)), tooltip=["split", "class", "count"],
    ).properties(height=220)


def intensity_histograms(histograms: pd.DataFrame) -> alt.Chart:
    """Share of pixels per grey level, one line per split and site (`stats.intensity_histograms`)."""
    data = histograms.assign(group=histograms["split"] + " · site " + histograms["site"])
    return alt.Chart(data).mark_line().encode(
        x=alt.X("intensity_bin:Q", title="grey level (0 black … 255 white)"),
        y=alt.Y("density:Q", title="share of pixels"), color=alt.Color("group:N", title="split · site"),
        tooltip=["split", "site", "intensity_bin", alt.Tooltip("density:Q", format=".4f")],
    ).properties(height=300)


def original_sizes(sizes: pd.DataFrame) -> alt.Chart:
    """Each image's size before resizing (`stats.original_size_table`)."""
    return alt.Chart(sizes).mark_circle(opacity=0.5).encode(
        x=alt.X("width:Q", title="original width (px)"), y=alt.Y("height:Q", title="original height (px)"),
        color="class:N", shape="split:N",
        tooltip=["split", "class", "width", "height", alt.Tooltip("aspect:Q", format=".2f")]).properties(height=260)


def label_shares(rows: list[dict], classes: list[str], axis_title: str) -> alt.Chart:
    """Of all images of a class, the share with each value of view / sex / age (`stats.label_table` rows)."""
    table = pd.DataFrame(rows)
    shares = table.melt(id_vars="value", value_vars=[f"share_of_{c}" for c in classes], var_name="class",
                        value_name="share")
    shares["class"] = shares["class"].str.removeprefix("share_of_")
    return alt.Chart(shares).mark_bar().encode(
        x=alt.X("value:N", title=axis_title, sort=list(table["value"]), axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("class:N", sort=list(classes)),
        y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of the class"),
        color=alt.Color("class:N", sort=list(classes)),
        tooltip=["value", "class", alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=240)


# ----- the Mismatch page (explore.insight.mismatch, explore.insight.adapt) ---------------------------------------
def error_components(components: list[dict]) -> alt.Chart:
    """The error decomposition's components (`mismatch.decompose_run(...)["components"]`): red adds error."""
    frame = pd.DataFrame([{"component": c["name"], "value": c["value"]} for c in components])
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("value:Q", title="share of images (error)", axis=alt.Axis(format="%")),
        y=alt.Y("component:N", sort=None, title=None),
        color=alt.condition("datum.value >= 0", alt.value("#d62728"), alt.value("#1f77b4")),
        tooltip=["component", alt.Tooltip("value:Q", format=".1%")]).properties(height=180)


def feature_pca(projected: dict, colour: str = "split") -> alt.Chart:
    """Val and test images on the first two principal components (`mismatch.feature_pca`), coloured by
    source ("split": val = site A, test = site B, in the split colours) or by "class"."""
    explained = projected["explained"]
    base = alt.Chart(pd.DataFrame(projected["rows"])).mark_circle(size=35, opacity=0.7).encode(
        x=alt.X("pc1:Q", title=f"PC1 ({explained[0]:.0%} of variance)"),
        y=alt.Y("pc2:Q", title=f"PC2 ({explained[1]:.0%})"), tooltip=["id", "source", "class"]).properties(height=300)
    if colour == "class":
        return base.encode(color=alt.Color("class:N", title="class", scale=alt.Scale(scheme="dark2"))).properties(
            title="by class")
    by_source = alt.Color("split:N", title="source", scale=alt.Scale(domain=["val", "test"],
                                                                       range=_split_colours(["val", "test"])))
    return base.encode(color=by_source).properties(title="by source (val = site A, test = site B)")


def adaptation(frame: pd.DataFrame) -> alt.Chart:
    """Test accuracy before and after each adaptation (`adapt`'s result rows), one panel per fix."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("when:N", sort=["before", "after"], title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), title="test accuracy"),
        color=alt.Color("when:N", sort=["before", "after"], scale=alt.Scale(range=["#d62728", "#2ca02c"])),
        column=alt.Column("fix:N", title=None, header=alt.Header(labelLimit=260)),
        tooltip=["fix", "when", alt.Tooltip("accuracy:Q", format=".1%"), alt.Tooltip("AUC:Q", format=".3f")],
    ).properties(width=170, height=220)


# ----- the Saliency page (explore.insight.attribution, explore.insight.explain_report, explore.insight.roar) -------------
def region_shares(rows: list[dict], method_titles: Mapping[str, str]) -> alt.Chart:
    """Share of positive attribution inside each region, per method and split (`attribution` share rows)."""
    frame = pd.DataFrame([r for r in rows if r["share"] is not None])
    frame["method"] = frame["method"].map(lambda m: method_titles.get(m, m))
    return alt.Chart(frame, title="Share of positive attribution per region").mark_bar().encode(
        x=alt.X("split:N", title=None, sort=["val", "test"]), y=alt.Y("share:Q", title=None, axis=alt.Axis(format="%")),
        color=alt.Color("split:N", title="split", scale=alt.Scale(domain=["val", "test"], range=["#1f77b4", "#d62728"])),
        column=alt.Column("region:N", title=None),
        row=alt.Row("method:N", title=None), tooltip=["method", "region", "split", alt.Tooltip("share:Q", format=".1%"),
                                                      alt.Tooltip("area:Q", format=".1%")],
    ).properties(width=60, height=90)


def randomisation(stages: list[dict]) -> alt.Chart:
    """The model-randomisation check: Spearman ρ with the trained model's map as layers are re-initialised
    from the top (`attribution.sanity_check(...)["stages"]`); 1 at zero layers."""
    frame = pd.DataFrame({"layers randomised (from the top)": [0] + [s["layers"] for s in stages],
                          "Spearman ρ": [1.0] + [s["spearman_mean"] for s in stages]})
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("layers randomised (from the top):Q", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("Spearman ρ:Q", scale=alt.Scale(domain=[-1, 1])),
        tooltip=["layers randomised (from the top)", alt.Tooltip("Spearman ρ:Q", format=".2f")]).properties(height=220)


def deletion_insertion(curve_rows: list[dict]) -> alt.Chart:
    """The report card's deletion and insertion curves (`explain_report.curve_rows`), random order dashed."""
    dashed = alt.condition(alt.datum.method == "random order", alt.value([4, 4]), alt.value([0]))
    return alt.Chart(pd.DataFrame(curve_rows)).mark_line(point=True).encode(
        x=alt.X("fraction:Q", title="share of pixels removed / revealed", axis=alt.Axis(format="%")),
        y=alt.Y("score:Q", title="P(explained class)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("method:N", title=None), strokeDash=dashed,
        column=alt.Column("curve:N", title=None, sort=["deletion", "insertion"]),
        row=alt.Row("split:N", title=None, sort=["val", "test"]),
        tooltip=["split", "curve", "method", alt.Tooltip("fraction:Q", format=".0%"), alt.Tooltip("score:Q", format=".2f")],
    ).properties(width=300, height=180)


def roar(points: list[dict], random_method: str) -> alt.Chart:
    """Remove and retrain (`roar.roar_points`): test accuracy as more top-attributed pixels are removed;
    the random removal dashed."""
    dashed = alt.condition(alt.datum.method == random_method, alt.value([4, 4]), alt.value([0]))
    return alt.Chart(pd.DataFrame(points, columns=["method", "fraction removed", "test accuracy"])).mark_line(
        point=True).encode(
        x=alt.X("fraction removed:Q", axis=alt.Axis(format="%")),
        y=alt.Y("test accuracy:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("method:N", title=None), strokeDash=dashed,
        tooltip=["method", alt.Tooltip("fraction removed:Q", format=".0%"), alt.Tooltip("test accuracy:Q", format=".3f")],
    ).properties(width=360, height=220)


# ----- saving a chart ----------------------------------------------------------------------------
def chart_formats() -> list[str]:
    """What a chart can be saved as here: PNG and SVG need the vl-convert-python package."""
    rendered = ["png", "svg"] if importlib.util.find_spec("vl_convert") is not None else []
    return rendered + ["html", "json"]


MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "html": "text/html", "json": "application/json"}


def chart_bytes(chart: alt.Chart, fmt: str) -> bytes:
    """The chart as PNG/SVG (rendered by vl-convert), a standalone HTML page, or its Vega-Lite JSON."""
    if fmt not in chart_formats():
        raise ValueError(f"cannot save a chart as {fmt!r} here; available: {', '.join(chart_formats())}"
                         + ("" if fmt not in ("png", "svg") else " (PNG and SVG need: pip install vl-convert-python)"))
    if fmt == "json":
        return chart.to_json().encode()
    buffer = io.BytesIO() if fmt == "png" else io.StringIO()
    chart.save(buffer, format=fmt)
    value = buffer.getvalue()
    return value if isinstance(value, bytes) else value.encode()
