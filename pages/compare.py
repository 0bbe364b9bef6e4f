"""Compare runs: overlay their curves, see only what differs, sweep settings, repeat with seeds, export."""
import time

import streamlit as st

from explore import compare, report
from explore.store import StoreError
from pages import multitask_section
from pages.common import job_manager, queue_runs, run_store, status_badge

st.title("📊 Compare runs")
store = run_store()


def chart_downloads(chart, stem: str, key: str) -> None:
    """One download button per format this machine can write (PNG/SVG need vl-convert-python)."""
    formats = compare.chart_formats()
    for column, fmt in zip(st.columns(len(formats)), formats):
        column.download_button(fmt.upper(), data=lambda fmt=fmt: compare.chart_bytes(chart, fmt),
                               file_name=f"{stem}.{fmt}", mime=compare.MIME_TYPES[fmt], key=f"{key}-{fmt}",
                               on_click="ignore", width="stretch")
    if "png" not in formats:
        st.caption("PNG and SVG need the vl-convert-python package; HTML and the Vega-Lite JSON always work.")


records = store.list(with_metrics=False)
runs = compare.runs_frame(records)
if runs.empty:
    st.info("No runs yet. Train one on the **Train** page (or queue a preset) and it appears here.")
    st.stop()
label_of = dict(zip(runs.run_id, runs.label))
state_of = dict(zip(runs.run_id, runs.state))

# ----- pick runs -------------------------------------------------------------------------------
with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    groups = c1.multiselect("Preset group or sweep", sorted(runs.group.unique()))
    models = c2.multiselect("Model", sorted(runs.model.unique()))
    known = runs.created.dropna()
    first_day, last_day = (known.min().date(), known.max().date()) if len(known) else (None, None)
    days = c3.date_input("Created between", (first_day, last_day) if first_day else (), min_value=first_day,
                         max_value=last_day)
    days = tuple(days) if isinstance(days, (tuple, list)) else (days,)
    shown = compare.filter_runs(runs, groups, models, *(days + (None, None))[:2])
    options = shown.run_id.tolist()
    if "compare_runs" not in st.session_state:  # first visit: the newest group's runs
        newest_group = runs.sort_values("created").group.iloc[-1]
        st.session_state["compare_runs"] = runs[runs.group == newest_group].run_id.tolist()[:6]
    st.session_state["compare_runs"] = [r for r in st.session_state["compare_runs"] if r in options]
    selected = st.multiselect("Runs", options, key="compare_runs",
                              format_func=lambda r: f"{status_badge(state_of[r])} {label_of[r]} · {r[:15]}")

if not selected:
    st.info("Pick one or more runs above (the filters narrow the list).")
    st.stop()
chosen = [store.load(run_id) for run_id in selected]
for record in chosen:
    if record.damaged:
        st.warning(f"{record.run_id}: {record.damaged}")

# ----- curves --------------------------------------------------------------------------------
curve_rows = compare.curves(chosen)
splits = st.pills("Splits", ["train", "val", "test", "train_dev"], selection_mode="multi",
                  default=["train", "val", "test"], key="compare_splits")
if curve_rows.empty:
    st.info("No epoch has finished in these runs yet.")
else:
    for column, metric in zip(st.columns(2), ("accuracy", "loss")):
        with column:
            chart = compare.curves_chart(curve_rows, metric, splits or ["val"])
            st.altair_chart(chart, width="stretch")
            if metric == "loss" and (curve_rows.metric == report.LR_METRIC).any():
                # the rate under the loss: StepLR's staircase lines up with the drops in the loss
                st.altair_chart(report.lr_chart(curve_rows), width="stretch")
            with st.popover(f"Save the {metric} chart"):
                chart_downloads(chart, f"{metric}-curves", f"curves-{metric}")
    st.caption("One colour per run, one dash style per split. Train accuracy is measured while training "
               "(dropout on); val and test use the weights at the end of each epoch.")

# ----- table ---------------------------------------------------------------------------------
table = compare.comparison_table(chosen)
st.subheader("What differs, and what it gave")
st.dataframe(table.drop(columns=["run_id"]), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
                            for c in ("val_acc_best_epoch", "val_acc_last_epoch", "test_acc")}
             | {"seconds_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f")})
st.caption("Only the settings that differ between the selected runs are shown. Best epoch = lowest "
           "validation loss. Click a column header to sort.")
st.download_button("Download the table (CSV)", compare.table_csv(table), "runs.csv", "text/csv", on_click="ignore")
multitask_section.compare(chosen)  # per-finding AUC curves when multi-label runs are selected

sweep_tab, repeat_tab, files_tab = st.tabs(["Sweep a setting", "Repeat with seeds", "Export and delete"])
base_options = [r.run_id for r in chosen if r.config is not None]


def base_picker(key: str):
    """The config a sweep or repeat starts from, or None (with a note) when no selected run has one."""
    if not base_options:
        st.info("Select a run whose settings can be read to start from them.")
        return None
    run_id = st.selectbox("Start from the settings of", base_options, key=key,
                          format_func=lambda r: label_of.get(r, r))
    return store.load(run_id, with_metrics=False).config


def queue(configs, state_key: str) -> None:
    run_ids = queue_runs(store, configs)
    if run_ids is None:
        return
    st.session_state[state_key] = configs[0].group
    st.success(f"Queued {len(run_ids)} runs as group {configs[0].group!r}; they fill in below as they finish.")


def group_records(group: str):
    """The runs of one group, read fresh from the store (the fragments call this every few seconds)."""
    return [store.load(r.run_id) for r in store.list() if r.config is not None and r.config.group == group]


# ----- sweeps --------------------------------------------------------------------------------
with sweep_tab:
    base = base_picker("sweep_base")
    settings = [] if base is None else st.multiselect("Settings to sweep (one or two)", list(compare.SWEEP_SETTINGS), max_selections=2,
                              default=["lr"], format_func=lambda s: compare.SWEEP_SETTINGS[s][0])
    grid, problems = {}, []
    for setting in settings:
        now = compare.setting_value(base, setting)
        text = st.text_input(f"Values of the {compare.SWEEP_SETTINGS[setting][0]} (now {now})",
                             key=f"sweep_values_{setting}",
                             placeholder="on, off" if compare.SWEEP_SETTINGS[setting][1] is bool else "e.g. 1e-4, 1e-3, 1e-2")
        try:
            grid[setting] = compare.parse_values(setting, text)
        except ValueError as error:
            if text.strip():  # an empty box is not yet a mistake
                problems.append(str(error))
    configs = []
    if base is not None:
        epochs = st.number_input("Epochs per run", 1, 200, min(base.epochs, 200))
    if grid and len(grid) == len(settings):
        try:
            configs = compare.sweep_configs(base, grid, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", epochs)
        except ValueError as error:
            problems.append(str(error))
    for problem in problems:
        st.caption(f"⚠️ {problem}")
    if base is not None and st.button(f"Queue {len(configs)} runs", disabled=not configs, type="primary"):
        queue(configs, "compare_sweep_group")
    sweep_groups = sorted(set(compare.sweep_groups(records))
                          | {st.session_state.get("compare_sweep_group", "")} - {""}, reverse=True)
    if sweep_groups:
        watched = st.selectbox("Show the sweep", sweep_groups, key="sweep_watched")

        @st.fragment(run_every=3)
        def sweep_progress():
            members = group_records(watched)
            swept = compare.swept_settings(r.config for r in members) or ["lr"]
            results = compare.sweep_results(members, swept[:2])
            done = int((results.status == "finished").sum())
            st.progress(done / max(len(results), 1), text=f"{done} of {len(results)} runs finished")
            if done:
                metric = st.radio("Metric", compare.RESULT_METRICS, index=2, horizontal=True, key="sweep_metric")
                chart = compare.sweep_chart(results, swept[:2], metric)
                st.altair_chart(chart, width="stretch")
                with st.popover("Save the sweep chart"):
                    chart_downloads(chart, f"{watched}-{metric}", "sweep-chart")
            st.dataframe(results.drop(columns=["run_id"]), hide_index=True, width="stretch")

        sweep_progress()

# ----- repeats -------------------------------------------------------------------------------
with repeat_tab:
    st.caption("One run of a small dataset swings by several points with the seed (weight initialisation and "
               "batch order). Repeating it shows the spread; the images stay the same.")
    base = base_picker("repeat_base")
    seeds = st.number_input("How many seeds", 2, 10, 3)
    if base is not None and st.button(f"Queue {seeds} runs (seeds 0–{seeds - 1})", type="primary"):
        queue(compare.repeat_configs(base, range(seeds), f"repeat-{time.strftime('%Y%m%d-%H%M%S')}"),
              "compare_repeat_group")
    repeat_groups = sorted(set(compare.repeat_groups(records))
                           | {st.session_state.get("compare_repeat_group", "")} - {""}, reverse=True)
    if repeat_groups:
        watched_repeat = st.selectbox("Show the repeats", repeat_groups, key="repeat_watched")

        @st.fragment(run_every=3)
        def repeat_progress():
            members = group_records(watched_repeat)
            results = compare.comparison_table(members)
            done = int((results.status == "finished").sum())
            st.progress(done / max(len(results), 1), text=f"{done} of {len(results)} seeds finished")
            summary = compare.aggregate_repeats(results)
            st.dataframe(summary, hide_index=True, column_config={
                c: st.column_config.NumberColumn(c, format="percent") for c in ("mean", "std", "min", "max")})
            if done:
                st.markdown(compare.describe_repeats(summary))
                left, right = st.columns(2)
                left.altair_chart(compare.repeats_chart(results[results.status == "finished"]), width="stretch")
                band = compare.repeat_curves(compare.curves([m for m in members if m.state == "finished"]))
                right.altair_chart(compare.repeat_band_chart(band, "accuracy"), width="stretch")

        repeat_progress()

# ----- export and delete ---------------------------------------------------------------------------
with files_tab:
    run_id = st.selectbox("Run", selected, format_func=lambda r: label_of.get(r, r), key="export_run")
    st.download_button("Download its config, metrics and summary (zip)", data=lambda: compare.run_zip(store, run_id),
                       file_name=f"{run_id}.zip", mime="application/zip", on_click="ignore")
    st.divider()
    st.markdown(f"**Delete the {len(selected)} selected runs** (their folders, weights included).")
    confirmed = st.checkbox("Yes, delete them permanently", key="confirm_delete")
    if st.button("Delete", disabled=not confirmed, type="primary"):
        active = job_manager().active()
        deleted, refused = compare.delete_runs(store, selected, active["running"] + active["queued"])
        if refused:
            st.warning(f"{len(refused)} runs are still queued or training: stop them on the Train page first.")
        st.session_state.pop("confirm_delete", None)
        st.session_state.pop("compare_runs", None)
        st.toast(f"Deleted {len(deleted)} runs.")
        st.rerun()
