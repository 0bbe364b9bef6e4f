"""The Saliency page's report card: which attribution maps deserve trust on this run (not a page itself).
Remove-and-retrain, shown under it, is in pages/saliency_roar.py.

Computed on demand in a background thread (explore.insight.explain_report.ReportJob), cached as JSON in
the run folder, shown from that file on every later visit.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore.insight import attribution as attr
from explore import charts
from explore.insight import explain_report as report_card
from explore.training.store import RunStore, StoreError
from pages.common import job_manager
from pages.saliency_roar import roar_section


@st.cache_resource
def report_jobs() -> dict:
    """(run folder, settings key) → ReportJob, shared by every session: one computation per run and settings."""
    return {}


def settings_widgets(loaded) -> report_card.ReportSettings:
    left, right = st.columns([3, 1])
    offered = [m for m in report_card.CARD_METHODS if not (m == "gradcam" and loaded.gradcam_layer_name is None)]
    default = [m for m in report_card.FAST_METHODS if m in offered]
    methods = left.multiselect("Methods", offered, default=default, key="card_methods",
                               format_func=report_card.CARD_TITLES.get,
                               help="Saliency and Grad-CAM take seconds; add Integrated Gradients, Occlusion and "
                                    "SmoothGrad for the full card (minutes on a CPU, with a progress bar)")
    n_images = right.select_slider("Images per split", [8, 16, 32], value=16, key="card_n")
    splits = tuple(name for name in ("val", "test") if len(loaded.split(name)))
    return report_card.ReportSettings(methods=tuple(m for m in report_card.CARD_METHODS if m in methods),
                                      n_images=n_images, splits=splits)


def show_card(report: dict) -> None:
    st.markdown(f"**{report['settings']['n_images']} images per split**, the class each image was predicted as "
                f"explained. Removed pixels become {report['replacement']}. Noise: {report['noise']}. "
                f"Computed in {report['seconds']:.0f} s.")
    config = {"method": st.column_config.TextColumn("method")}
    config.update({column: st.column_config.TextColumn(title, help=report_card.COLUMN_MEANING[column])
                   for column, title in report_card.CARD_COLUMNS.items()})
    with st.container(key="card_table"):
        st.dataframe(pd.DataFrame(report_card.card_rows(report)), hide_index=True, column_config=config)
    st.caption(f"Each cell: the verdict on val (site A, the training hospital) | on test (site B). "
               f"{report_card.LEGEND}. Hover a column title for what passing means; the numbers are below.")
    for sentence in report_card.card_sentences(report):
        st.markdown(f"- {sentence}")
    with st.expander("The numbers behind the verdicts"):
        st.dataframe(pd.DataFrame(report_card.numbers_rows(report)), hide_index=True)
    st.altair_chart(charts.deletion_insertion(report_card.curve_rows(report)))
    st.caption("Deletion: most-attributed pixels removed first: a faithful map makes the score fall fast (below "
               "the dashed random order). Insertion: most-attributed pixels revealed first: the score should rise fast.")


def watch(job: report_card.ReportJob) -> None:
    """Progress while the background thread works; a full rerun shows the card once the file is written."""
    if job.error:
        st.error(f"The report card could not be computed: {job.error}")
        return
    progress = job.progress
    fraction = progress.done / progress.total if progress else 0.0
    st.progress(fraction, text=progress.message if progress else "starting…")
    if job.report is not None:
        st.rerun()


def data_randomisation_widget(store: RunStore, loaded) -> str | None:
    """The shuffled-label copy of this run: its id once trained, else a button that queues it (None)."""
    if loaded.config.permute_labels:
        st.caption("This run was itself trained on shuffled labels: it is the data-randomisation model of another run.")
        return None
    permuted_id, state = report_card.find_data_randomisation_run(store, loaded.config)
    if state == "finished":
        st.caption(f"Data randomisation: compared with run `{permuted_id}`, the same model trained on shuffled labels.")
        return permuted_id
    if state in ("queued", "running"):
        st.info(f"The shuffled-label model is {state} (run `{permuted_id}`); the Train page shows its progress. "
                f"Come back when it has finished to add the data-randomisation test.")
        return None
    left, right = st.columns([3, 1])
    left.caption("Data randomisation (Adebayo et al. 2018) needs the same model trained on shuffled labels: a map "
                 "that still looks the same for a model that learned nothing real does not explain the model.")
    if right.button("Train it (a normal run)", key="card_train_permuted"):
        config = report_card.data_randomisation_config(loaded.config)
        new_id = job_manager().submit(store, [config])[0]
        st.success(f"Queued run `{new_id}` ({config.name}).")
    return None


def report_card_section(store: RunStore, run_id: str, loaded, device) -> None:
    card_section(store, run_id, loaded, device)
    roar_section(store, run_id, loaded)  # pages/saliency_roar.py


def card_section(store: RunStore, run_id: str, loaded, device) -> None:
    st.header("Report card: which maps deserve trust?")
    st.caption("Each method is put through the tests of the literature on this run's own images: deletion and "
               "insertion curves (faithfulness), Captum's sensitivity and infidelity (stability), both randomisation "
               "tests of Adebayo et al. 2018, and, where the data knows where the lesion is, the lesion's share and "
               "the pointing game. Val and test side by side: a map can be faithful at one hospital and not the other.")
    settings = settings_widgets(loaded)
    if not settings.methods:
        st.info("Pick at least one method.")
        return
    permuted_id = data_randomisation_widget(store, loaded)
    run_dir = store.path(run_id)
    cached = report_card.load_cached_report(run_dir, settings, permuted_id)
    if cached is not None:
        show_card(cached)
        return
    key = (str(run_dir), settings.key(), permuted_id)
    job = report_jobs().get(key)
    if job is None or (job.error and not job.running):
        if st.button("Compute the report card", key="card_compute", type="primary"):
            job = start_job(store, run_dir, loaded, settings, permuted_id, device)
            report_jobs()[key] = job
        else:
            if job is not None and job.error:
                st.error(f"The last try failed: {job.error}")
            st.caption("Saliency and Grad-CAM take seconds; all five methods on 16 images per split a few minutes "
                       "on a laptop CPU. It runs in the background: the page stays usable, and the card is saved with "
                       "the run.")
            return
    st.fragment(run_every=1.0)(watch)(job)


def start_job(store: RunStore, run_dir, loaded, settings, permuted_id: str | None, device) -> report_card.ReportJob:
    permuted = None
    if permuted_id is not None:
        try:
            permuted = attr.load_run(store, permuted_id, bundle=loaded.bundle).explainer(device)
        except (StoreError, ValueError, RuntimeError) as error:
            st.warning(f"The shuffled-label run cannot be loaded ({error}); the card leaves data randomisation out.")
            permuted_id = None
    splits = {name: loaded.split(name) for name in settings.splits}
    return report_card.ReportJob(run_dir, settings).start(loaded.explainer(device), splits, permuted, permuted_id)
