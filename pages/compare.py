"""Compare runs: overlay their curves, see only what differs, sweep settings, repeat with seeds, export.

The tabs live in pages/compare_groups.py (sweeps, repeats) and pages/compare_files.py (saving, deleting)."""
import streamlit as st

from explore import charts
from explore.insight import compare, report
from pages import multitask_section
from pages.common import run_store, status_badge
from pages.compare_files import chart_downloads, export_and_delete
from pages.compare_groups import repeat_tab, sweep_tab

st.title("📊 Compare runs")
store = run_store()
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
    first_day, last_day = compare.date_range(runs) or (None, None)
    days = c3.date_input("Created between", (first_day, last_day) if first_day else (), min_value=first_day,
                         max_value=last_day)
    days = tuple(days) if isinstance(days, (tuple, list)) else (days,)
    options = compare.filter_runs(runs, groups, models, *(days + (None, None))[:2]).run_id.tolist()
    if "compare_runs" not in st.session_state:  # first visit: the newest group's runs
        st.session_state["compare_runs"] = compare.newest_group_runs(runs)
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
splits = st.pills("Splits", list(compare.SPLITS), selection_mode="multi", default=["train", "val", "test"],
                  key="compare_splits")
if curve_rows.empty:
    st.info("No epoch has finished in these runs yet.")
else:
    for column, metric in zip(st.columns(2), ("accuracy", "loss")):
        with column:
            chart = charts.curves(curve_rows, metric, splits or ["val"], by_run=True)
            st.altair_chart(chart, width="stretch")
            if metric == "loss" and report.has_learning_rate(chosen):
                # the rate under the loss: StepLR's staircase lines up with the drops in the loss
                st.altair_chart(charts.learning_rate(curve_rows), width="stretch")
            with st.popover(f"Save the {metric} chart"):
                chart_downloads(chart, f"{metric}-curves", f"curves-{metric}")
    st.caption("One colour per run, one dash style per split. Train accuracy is measured while training "
               "(dropout on); val and test use the weights at the end of each epoch.")

# ----- table ---------------------------------------------------------------------------------
table = compare.comparison_table(chosen)
st.subheader("What differs, and what it gave")
st.dataframe(table.drop(columns=["run_id"]), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
                            for c in compare.RESULT_METRICS}
             | {"seconds_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f")})
st.caption("Only the settings that differ between the selected runs are shown. Best epoch = lowest "
           "validation loss. Click a column header to sort.")
st.download_button("Download the table (CSV)", compare.table_csv(table), "runs.csv", "text/csv", on_click="ignore")
multitask_section.compare(chosen)  # per-finding AUC curves when multi-label runs are selected

sweep, repeat, files = st.tabs(["Sweep a setting", "Repeat with seeds", "Export and delete"])
base_options = [r.run_id for r in chosen if r.config is not None]
with sweep:
    sweep_tab(store, records, base_options, label_of)
with repeat:
    repeat_tab(store, records, base_options, label_of)
with files:
    export_and_delete(store, selected, label_of)
