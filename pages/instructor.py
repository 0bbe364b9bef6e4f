"""The instructor's class view (for the projector): every student's finished runs, the queue, the server.

Reachable only as /instructor?token=<EXPLORE_INSTRUCTOR_TOKEN>; never listed in the navigation.
Everything shown comes from explore.insight.classview and the job manager's overview().
"""
import streamlit as st

from explore import charts
from explore.insight import classview
from explore.settings import instructor_allowed
from explore.training.store import default_runs_root
from pages.common import app_settings, job_manager

REFRESH_SECONDS = 3
# Projector: larger type everywhere on the page (the chart enlarges itself through class_scatter).
PROJECTOR_CSS = """<style>
  .stMainBlockContainer, .stMainBlockContainer p, .stMainBlockContainer li { font-size: 1.45rem; }
  .stMainBlockContainer h1 { font-size: 3.2rem; }
  .stMainBlockContainer h3 { font-size: 2.2rem; }
  .stMainBlockContainer [data-testid="stMetricValue"], .stMainBlockContainer [data-testid="stMetricValue"] * {
    font-size: 3.6rem; line-height: 1.2; }
  .stMainBlockContainer [data-testid="stMetricLabel"] p { font-size: 1.45rem; }
</style>"""

if not instructor_allowed(app_settings(), st.query_params.get("token")):
    st.title("🧑‍🏫 Class view")
    st.error("This page is for the instructor only. Open it with the instructor token in the address: "
             "`/instructor?token=...` (the server sets it with EXPLORE_INSTRUCTOR_TOKEN).", icon="🔒")
    st.stop()

root = default_runs_root()
st.title("🧑‍🏫 Class view")
toggle_col, colour_col = st.columns([1, 3], vertical_alignment="center")
projector = toggle_col.toggle("Projector", key="projector", help="Large type and a large chart for the room")
colour = colour_col.segmented_control("Colour dots by", ["model", "preset"], default="model", key="colour",
                                      label_visibility="collapsed") or "model"
if projector:
    st.markdown(PROJECTOR_CSS, unsafe_allow_html=True)


@st.fragment(run_every=REFRESH_SECONDS)
def class_results() -> None:
    runs = classview.class_runs(root)
    summary = classview.class_summary(runs)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("finished runs", summary["runs"], help="from every student's session")
    c2.metric("students", summary["sessions"])
    c3.metric("val acc, site A", f"{summary['val_acc']:.1%}" if summary["runs"] else "–",
              help="mean validation accuracy of the finished runs (the training hospital)")
    c4.metric("test acc, site B", f"{summary['test_acc']:.1%}" if summary["runs"] else "–",
              delta=f"{-summary['drop']:.1%}" if summary["runs"] else None,
              help="mean test accuracy of the finished runs (another hospital); the arrow: the change from val")
    if runs.empty:
        st.info("No finished runs yet. Runs appear here, one dot each, as soon as a student's run finishes.")
        return
    st.altair_chart(charts.class_scatter(runs, color=colour, projector=projector), width="content")
    st.caption(f"One dot per finished run; {summary['below_diagonal']} of {summary['runs']} lie below the diagonal: "
               "more accurate on the training hospital's images (site A) than on another hospital's (site B).")


@st.fragment(run_every=REFRESH_SECONDS)
def queue_and_server() -> None:
    manager = job_manager()
    overview = manager.overview()
    labels = classview.session_labels(root)
    queue = classview.queue_rows(overview, root, labels)
    memory = classview.server_memory_mb()
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Queue by session")
        if queue.empty:
            st.caption("Nothing running or queued.")
        else:
            st.dataframe(queue, hide_index=True, width="stretch")
            choices = dict(zip(queue.run_id, queue.session + " · " + queue.state + " · " + queue.name))
            pick_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
            run_id = pick_col.selectbox("Run to cancel", list(choices), format_func=choices.get, key="cancel_pick")
            if button_col.button("Cancel run", key="cancel", type="primary"):
                stopped = manager.stop(run_id)
                st.toast(f"Cancelled: {choices[run_id]}" if stopped else "That run had already ended.")
    with right:
        st.subheader("Workers")
        st.dataframe(classview.worker_rows(overview, root, labels), hide_index=True, width="stretch")
        st.metric("server memory (RSS)", f"{memory['total_mb']:,.0f} MB",
                  help=f"server process {memory['server_mb']:,.0f} MB + worker processes {memory['children_mb']:,.0f} MB")


class_results()
queue_and_server()
