"""Train: replay a homework preset or set every knob yourself, then watch the model learn.

Training runs in the server's job queue, not in this script: changing a widget, switching
pages or refreshing the browser never stops or restarts it. The run ids sit in the URL
(?run=...), so a refresh finds them again.
"""
import math
from dataclasses import replace

import streamlit as st
import torch

from explore import report
from explore.config import PRECISIONS, RunConfig
from explore.models import MODELS
from explore.presets import PRESETS, at_image_size
from explore.settings import NotAllowed, gate_request
from explore.share import decode_config, encode_config, export_run_bundle, import_run_bundle
from explore.store import RunStore, StoreError
from pages import multitask_section
from pages.common import (app_settings, bundle_or_stop, current_data_spec, job_manager, queue_runs, run_store,
                          status_badge)

LEARNING_RATES = [1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
WEIGHT_DECAYS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]
OPTIMIZERS = {"sgd": "SGD", "momentum": "SGD + momentum", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
SCHEDULERS = {"none": "constant", "step": "StepLR", "exponential": "exponential decay", "cosine": "cosine",
              "plateau": "reduce on plateau", "onecycle": "one-cycle"}
NORMS = {"dataset": "train-set mean/std", "per_image": "per image", "histeq": "histogram equalisation",
         "none": "none (pixels 0..1)"}
PERCENT_COLUMNS = {name: st.column_config.NumberColumn(format="percent")
                   for name in ("accuracy", "sensitivity", "specificity", "val acc", "test acc")}
PERCENT_COLUMNS["AUC"] = st.column_config.NumberColumn(format="%.3f")
PER_CLASS_COLUMNS = {name: st.column_config.NumberColumn(format="percent") for name in ("precision", "recall", "f1")}
HEADLINE = [("val accuracy", "val", "acc"), ("test accuracy", "test", "acc"), ("test AUC", "test", "auc"),
            ("test sensitivity", "test", "sensitivity")]  # (label, split, key in summary["splits"][split])

store, manager, settings = run_store(), job_manager(), app_settings()
spec = current_data_spec()
MAX_EPOCHS = settings.max_epochs if settings.demo_mode else 300
st.title("Train a classifier")
st.caption(f"Dataset: **{report.describe_data(spec)}** — choose another on the Data page.")


def preset_configs() -> list[RunConfig] | None:
    """The preset picker; returns the configs to queue when its Train button is pressed."""
    if st.query_params.get("preset") in PRESETS and "preset" not in st.session_state:
        st.session_state["preset"] = st.query_params["preset"]  # opened from a shared link
    name = st.selectbox("Preset", list(PRESETS), format_func=lambda n: PRESETS[n].title, key="preset")
    preset = PRESETS[name]
    st.info(preset.note.replace("\n", "  \n"))
    quick = st.checkbox("Quick variant", value=not torch.cuda.is_available(), key="quick",
                        help="On by default without a GPU: the full presets replay the homework's 256 px runs.")
    if quick:
        st.caption(f"⚡ {preset.describe_quick()}")
    configs = preset.configs(quick=quick)
    if preset.own_data:  # e.g. the real pediatric → adult mismatch: the data is the experiment
        st.caption(f"📦 This preset brings its own data: **{report.describe_data(configs[0].data)}** "
                   "(the Data page's choice is not used; its 'Real data' card fetches the files).")
    else:
        own_size = st.checkbox(f"Use the Data page's image size ({spec.image_size} px) instead of the preset's "
                               f"({configs[0].data.image_size} px)", key="preset_own_size")
        try:
            configs = [c.replace(data=replace(spec, image_size=c.data.image_size)) for c in configs]
            if own_size:
                configs = [at_image_size(c, spec.image_size) for c in configs]
        except ValueError as error:
            st.error(f"This preset cannot run on the chosen dataset: {error}")
            return None
    st.dataframe(report.configs_table(configs), hide_index=True)
    st.caption(f"🔗 Link to this preset: `?preset={name}` (add it to this page's address and share it)")
    label = "Train this preset" + (f" ({len(configs)} runs, one after another)" if len(configs) > 1 else "")
    return configs if st.button(label, type="primary", key="train_preset") else None


def custom_config() -> RunConfig | None:
    """Every knob of a RunConfig; returns it when the Train button is pressed."""
    left, middle, right = st.columns(3, gap="large")
    with left:
        st.markdown("**Model and loss**")
        model = st.selectbox("Model", list(MODELS), index=list(MODELS).index("hw3_cnn"), key="model")
        st.caption(MODELS[model].description)
        options = {}
        if "dropout" in MODELS[model].options:
            options["dropout"] = st.slider("Dropout", 0.0, 0.9, 0.5, 0.05, key="dropout")
        if "batch_norm" in MODELS[model].options:
            options["batch_norm"] = st.checkbox("Batch norm", key="batch_norm",
                                                help="BatchNorm after each hidden layer or convolution")
        transfer_settings = transfer_options(model)
        two_classes = spec.num_classes == 2
        loss = st.radio("Loss", ["bce", "ce"] if two_classes else ["ce"], horizontal=True, key="loss",
                        format_func={"bce": "BCE (1 output)", "ce": "cross-entropy (K outputs)"}.get)
        class_weights = st.checkbox("Class weights (inverse frequency)", key="class_weights")
        multitask = multitask_section.options(spec)  # {} unless several findings are chosen
        st.markdown("**Run**")
        seed_col, name_col = st.columns(2)
        seed = seed_col.number_input("Seed", 0, 10**6, 0, key="seed")
        name = name_col.text_input("Name", "", key="run_name", placeholder="automatic")
        device_col, precision_col = st.columns(2)
        device = device_col.selectbox("Device", ["auto", "cpu", "cuda"], key="device")
        precision = precision_col.selectbox("Precision", list(PRECISIONS), key="precision",
                                             help="auto: bf16 on GPUs from compute capability 8.0 and CPUs with AMX/AVX-512-BF16, "
                                                  "fp16 with a gradient scaler on 7.x GPUs (T4, V100), else fp32")
    with middle:
        st.markdown("**Optimiser and schedule**")
        optimizer = st.selectbox("Optimiser", list(OPTIMIZERS), index=3, format_func=OPTIMIZERS.get, key="optimizer")
        nesterov = optimizer == "momentum" and st.checkbox("Nesterov", key="nesterov")
        lr = st.select_slider("Learning rate", LEARNING_RATES, value=1e-3, format_func="{:g}".format, key="lr")
        find_lr = st.button("🔎 Find a learning rate", key="find_lr",
                            help="A short range test on a copy of this model: the learning rate rises "
                                 "exponentially batch by batch while the loss is recorded. It never trains your run.")
        weight_decay = st.select_slider("Weight decay", WEIGHT_DECAYS, value=0.0, format_func="{:g}".format,
                                        key="weight_decay")
        scheduler = st.selectbox("Schedule", list(SCHEDULERS), format_func=SCHEDULERS.get, key="scheduler")
        step_size, gamma = 10, 0.1
        if scheduler == "step":
            step_size = st.number_input("Step size (epochs)", 1, 100, 10, key="step_size")
        if scheduler in ("step", "exponential", "plateau"):
            gamma = st.number_input("Decay factor γ", 0.01, 0.99, 0.1 if scheduler != "exponential" else 0.9,
                                    0.05, key=f"gamma_{scheduler}")
    with right:
        st.markdown("**Batches, epochs, regularisation**")
        batch_size = st.select_slider("Batch size", [8, 16, 32, 64, 128, 256, 512], value=32, key="batch_size")
        epochs = st.number_input("Epochs", 1, MAX_EPOCHS, min(10, MAX_EPOCHS), key="epochs")
        patience = st.number_input("Early stopping patience (0 = off)", 0, 50, 0, key="patience")
        restore_best = st.checkbox("Restore the best epoch's weights", value=True, key="restore_best",
                                   disabled=patience == 0)
        augment = st.multiselect("Augmentation", ["geometry", "intensity", "noise"], key="augment")
        if st.checkbox("Horizontal flip", key="hflip"):
            augment.append("hflip")
        st.caption("Flips are off by default: the heart is on the patient's left, so a flipped "
                   "chest X-ray shows anatomy that does not exist.")
        input_norm = st.selectbox("Input normalisation", list(NORMS), format_func=NORMS.get, key="input_norm",
                                  help="How pixels are standardised before the model; statistics come from "
                                       "the training split only, so val and test never leak in.")
        train_dev = st.number_input("Hold out a train-dev set (%)", 0, 40, 0, 5, key="train_dev",
                                    help="This share of the training images is never trained on: the Mismatch "
                                         "page then splits the error into avoidable bias, variance, overfitting "
                                         "to val and data mismatch.")

    def build() -> RunConfig:
        return RunConfig(
            data=spec, model=model, model_options=tuple(options.items()), loss=loss, class_weights=class_weights,
            optimizer=optimizer, nesterov=bool(nesterov), lr=lr, weight_decay=weight_decay, scheduler=scheduler,
            step_size=int(step_size), gamma=float(gamma), batch_size=batch_size, epochs=int(epochs),
            early_stopping_patience=int(patience), restore_best=restore_best, augment=tuple(augment),
            input_norm=input_norm, train_dev_fraction=train_dev / 100, seed=int(seed), device=device,
            precision=precision, name=name or automatic_name(model, options, optimizer, lr), **transfer_settings,
        ).replace(**multitask)

    lr_finder_panel(build, find_lr)
    if not st.button("Train", type="primary", key="train_custom"):
        return None
    return build()


def automatic_name(model: str, options: dict, optimizer: str, lr: float) -> str:
    return f"{model}{' + batch norm' if options.get('batch_norm') else ''} · {OPTIMIZERS[optimizer]} lr {lr:g}"


def transfer_options(model: str) -> dict:
    """For a pretrained backbone: how to transfer, and — before anything is queued — whether the ImageNet
    weights are here (if not, the run trains from random weights and is named '(random init)')."""
    if MODELS[model].family != "transfer":
        return {}
    from explore import transfer

    mode = st.selectbox("Transfer mode", transfer.MODES, index=1, format_func=transfer.MODE_TITLES.get,
                        key="transfer_mode")
    head = st.radio("New head", ["course", "linear"], horizontal=True, key="transfer_head")
    scale = st.select_slider("Backbone lr = lr ×", [0.01, 0.1, 0.3, 1.0], value=0.1, key="backbone_lr_scale")
    status = weights_status(model)
    if not (status["available"] or status["downloadable"]):
        st.warning(f"{status['message']}\n\nThis run will be named **… (random init)**.")
    return {"transfer_mode": mode, "transfer_head": head, "backbone_lr_scale": float(scale)}


@st.cache_data(ttl=60, show_spinner=False)
def weights_status(model: str) -> dict:
    """Cached for a minute: the network check takes up to two seconds and the form reruns on every click."""
    from explore import transfer

    return transfer.weights_status(model, check_network=True)


def lr_finder_panel(build, clicked: bool) -> None:
    """The LR finder's result under the form, with a button that copies the suggestion into the LR field."""
    from explore import lr_finder

    if clicked:
        try:
            (config,), _ = gate_request(settings, [build()])  # the same caps as a queued run
            with st.spinner("Range test: 100 batches with a rising learning rate, on a copy of the model…"):
                result = lr_finder.find_lr(config, bundle_or_stop(config.data))
            st.session_state["lr_finder"] = result | {"for": config.model}
        except (ValueError, NotAllowed) as error:
            st.error(f"Cannot run the range test: {error}")
    result = st.session_state.get("lr_finder")
    if not result:
        return
    with st.expander(f"🔎 Learning-rate range test ({result['for']})", expanded=True):
        chart_col, text_col = st.columns([3, 2])
        chart_col.altair_chart(lr_finder.chart(result), width="stretch")
        suggested = result["suggested_lr"]
        text_col.markdown(f"**Suggested learning rate: {suggested:.1e}** — {result['rule']}."
                          + (f"  \nSteepest descent at {result['steepest_lr']:.1e}." if result["steepest_lr"] else ""))
        text_col.caption("The loss barely moves while the rate is tiny, falls fastest in the useful range, then "
                         "blows up. The test trained a throw-away copy; your run starts fresh.")
        nearest = min(LEARNING_RATES, key=lambda v: abs(math.log10(v) - math.log10(suggested))) if suggested else None
        if nearest is not None:
            text_col.button(f"Use {nearest:g}", key="use_suggested_lr", on_click=set_lr, args=(nearest,),
                            help="The nearest value on the learning-rate slider")


def set_lr(value: float) -> None:
    st.session_state["lr"] = value  # in a button callback: before the slider is drawn again


def shared_config() -> RunConfig | None:
    """A configuration opened from a shared link (?config=...); returns it when Train is pressed."""
    try:
        config = decode_config(st.query_params["config"])
    except ValueError as error:
        st.error(f"{error}. Ask for a new link, or set the run up by hand in the other tabs.")
        return None
    st.info("This configuration came with the link you opened. Train it as it is, or change it in the "
            "Custom run tab.")
    st.dataframe(report.configs_table([config]), hide_index=True)
    return config if st.button("Train this configuration", type="primary", key="train_shared") else None


def honest_weights(configs: list[RunConfig]) -> list[RunConfig]:
    """Transfer runs without their ImageNet weights are renamed '(random init)' before they are queued."""
    if not any(MODELS[c.model].family == "transfer" for c in configs):
        return configs
    from explore.transfer import honest_configs

    configs, messages = honest_configs(configs)
    for message in messages:
        st.warning(message)
    return configs


def submit(build) -> None:
    """Queue the runs the form built; their ids go into the URL so a refresh finds them.
    The job manager's gate may cap runs (demo mode) or refuse them; the page says what it said."""
    try:
        configs = build()
    except ValueError as error:
        st.error(f"Cannot start: {error}")
        return
    if not configs:
        return
    run_ids = queue_runs(store, honest_weights(configs if isinstance(configs, list) else [configs]))
    if run_ids is None:
        return
    st.query_params["run"] = run_ids
    st.session_state["train_runs"] = run_ids


tab_names = ["📚 Homework presets", "🛠️ Custom run"] + (["🔗 Shared link"] if "config" in st.query_params else [])
tabs = st.tabs(tab_names)
with tabs[0]:
    submit(preset_configs)
with tabs[1]:
    submit(custom_config)
if len(tabs) == 3:
    with tabs[2]:
        submit(shared_config)


def shown_run_ids() -> list[str]:
    """Runs named in the URL (a refresh keeps them), else the ones this session started last."""
    wanted = st.query_params.get_all("run") or st.session_state.get("train_runs", [])
    return [run_id for run_id in wanted if report.run_exists(store, run_id)]


def is_live(record) -> bool:
    """Still worth polling: running, or waiting in this server's queue (a queued run that the
    queue does not know was queued before a server restart: it will never start)."""
    in_queue = manager.queue_position(record.run_id) is not None
    return record.state == "running" or (record.state == "queued" and in_queue)


def live_view(run_ids: list[str], finished_before: set[str]) -> None:
    """Status, progress and curves of the shown runs; redrawn every second while any is live."""
    records = [store.load(run_id) for run_id in run_ids]
    finished_now = {r.run_id for r in records if not is_live(r)}
    if finished_now != finished_before:
        st.rerun()  # a run ended: redraw the whole page once, with its final results
    for record in records:
        name_col, state_col, stop_col = st.columns([3, 5, 1], vertical_alignment="center")
        name_col.markdown(f"**{record.label}**  \n{status_badge(record.state)}")
        if record.state == "running":
            fraction, text = report.progress(record.status)
            state_col.progress(fraction, text=text)
        elif record.state == "queued":
            waiting = report.queue_text(manager.queue_position(record.run_id), manager.estimated_wait(record.run_id))
            state_col.write(f"🕒 {waiting}")
        else:
            state_col.write(report.outcome_text(record))
        if is_live(record) and stop_col.button("Stop", key=f"stop-{record.run_id}"):
            manager.stop(record.run_id)
    epochs_so_far = tuple(len(r.metrics) for r in records)
    if not any(epochs_so_far):
        st.caption("The curves appear after the first epoch.")
        return
    loss_col, acc_col = st.columns(2)
    charts = [(loss_col, "loss"), (acc_col, "accuracy")]
    if any("lr" in m for r in records for m in r.metrics):  # runs from before the lr was recorded have none
        charts.append((loss_col, report.LR_METRIC))
    for column, metric in charts:
        column.vega_lite_chart(curves_spec(str(store.root), tuple(run_ids), epochs_so_far, metric), width="stretch")
    multitask_section.live_auc(records, acc_col)  # per-finding AUC curves of multi-label runs


@st.cache_data(max_entries=256, show_spinner=False)
def curves_spec(root: str, run_ids: tuple[str, ...], epochs_so_far: tuple[int, ...], metric: str) -> dict:
    """The chart's Vega-Lite spec, built once per new epoch: the live view redraws every second,
    and building and validating an Altair chart each time took the training thread's GIL for tens
    of milliseconds. (epochs_so_far is there for the cache key: a new epoch, a new spec.)"""
    store_here = RunStore(root)  # root is this session's own runs folder
    records = [store_here.load(run_id) for run_id in run_ids]
    if metric == report.LR_METRIC:  # under the loss curves: StepLR's staircase, cosine's half wave
        return report.lr_chart(report.curves_for(records)).to_dict()
    return report.curves_chart(report.curves_for(records), metric).to_dict()


def final_results(record) -> None:
    """How one run ended: the message, metrics per split, confusion matrices and ROC curves."""
    summary, state = record.summary or {}, record.state
    message = record.damaged or summary.get("message", "")
    {"finished": st.success, "stopped": st.info, "diverged": st.warning}.get(state, st.error)(
        f"{status_badge(state)} — {message}")
    if summary.get("tasks"):  # a multi-label run: results per finding
        multitask_section.results(record, store)
        run_settings(record)
        share_run(record)
        return
    table = report.metrics_table(summary)
    if table.empty:
        return
    for col, (label, split, key) in zip(st.columns(len(HEADLINE)), HEADLINE):
        value = summary["splits"].get(split, {}).get(key)
        col.metric(label, "—" if value is None else f"{value:.1%}" if key != "auc" else f"{value:.3f}")
    st.dataframe(table, hide_index=True, column_config=PERCENT_COLUMNS)
    classes = summary.get("classes", [])
    per_class = report.per_class_table(summary)
    if len(classes) > 2:  # three classes: the report a student hands in is per class
        st.markdown("**Per class** (precision: right when it says so; recall: found of those there; F1: both)")
        st.dataframe(per_class, hide_index=True, column_config=PER_CLASS_COLUMNS)
    matrix_cols = st.columns([1.1, 1.1, 1.3], gap="medium")
    for col, split in zip(matrix_cols, ("val", "test")):
        if split in summary["splits"]:
            frame = report.confusion_frame(summary["splits"][split]["confusion"], classes)
            with col:
                st.altair_chart(report.confusion_chart(frame, f"confusion · {report.SPLIT_LABELS[split]}"),
                                width="content")
                cell_buttons(record.run_id, split, summary["splits"][split]["confusion"], classes)
    try:
        roc, aucs = report.roc_frame(store.load_predictions(record.run_id))
        matrix_cols[2].altair_chart(report.roc_chart(roc, aucs), width="stretch")
    except StoreError as error:
        matrix_cols[2].caption(f"No ROC curve: {error}")
    cell_images(record)
    if len(classes) <= 2 and not per_class.empty:
        with st.expander("Per class: precision, recall, F1"):
            st.dataframe(per_class, hide_index=True, column_config=PER_CLASS_COLUMNS)
    run_settings(record)
    share_run(record)


def cell_buttons(run_id: str, split: str, confusion: list[list[int]], classes: list[str]) -> None:
    """One button per confusion-matrix cell, laid out like the matrix: a click shows that cell's X-rays."""
    from explore.attribution import cell_name

    st.caption("Open a cell's X-rays" + (" (laid out like the matrix):" if len(classes) > 2 else ":"))
    for t, row in enumerate(confusion):
        for p, (column, count) in enumerate(zip(st.columns(len(row)), row)):
            label = f"{cell_name(t, p, tuple(classes))} · {count}" if len(classes) == 2 else str(count)
            column.button(label, key=f"cell-{run_id}-{split}-{t}-{p}",
                          help=f"true {classes[t]}, predicted {classes[p]}", disabled=count == 0, width="stretch",
                          on_click=pick_cell, args=(run_id, split, t, p))


def pick_cell(run_id: str, split: str, true: int, predicted: int) -> None:
    st.session_state["train_cell"] = (run_id, split, true, predicted)


def cell_images(record) -> None:
    """The X-rays of the confusion-matrix cell picked above (mistakes: most confident first)."""
    picked = st.session_state.get("train_cell")
    if not picked or picked[0] != record.run_id or record.config is None:
        return
    _, split, t, p = picked
    classes = (record.summary or {}).get("classes", [])
    try:
        predictions = store.load_predictions(record.run_id)[split]
    except (StoreError, KeyError) as error:
        st.caption(f"No predictions to open: {error}")
        return
    images = bundle_or_stop(record.config.data).splits[split]
    if len(images) != len(predictions["labels"]):
        st.warning("The dataset changed since this run trained: its images no longer match the predictions.")
        return
    index = report.cell_examples(predictions, (t, p), limit=8)
    st.markdown(f"**{report.SPLIT_LABELS[split]} · true {classes[t]}, predicted {classes[p]}** "
                f"({len(index)} shown{', most confident mistakes first' if t != p else ''})")
    scores = predictions["probs"]
    for column, i in zip(st.columns(8), index):  # thumbnails: eight to a row whatever the count
        score = float(scores[i]) if scores.ndim == 1 else 1 - float(scores[i, 0])
        column.image(report.grey(images.images[i]), caption=f"{images.ids[i].rsplit('/', 1)[-1]} · "
                                                          f"P(disease) {score:.2f}", width="stretch")


def run_settings(record) -> None:
    """Everything that decided the run, and the command that reruns it: what a student hands in."""
    if record.config is None:
        return
    from explore.reproduce import reproduce_command, settings_rows

    with st.expander("All settings, and how to reproduce this run"):
        st.code(reproduce_command(record.config), language="bash", wrap_lines=True)
        st.caption("Run this in the project folder to train the same run again (same seeds, same data).")
        st.dataframe(settings_rows(record.config, record.summary), hide_index=True, width="stretch")


def share_run(record) -> None:
    """A link that opens this run's settings elsewhere, and a bundle that replays it without retraining."""
    if record.config is None:
        return
    link_col, bundle_col = st.columns([3, 1], vertical_alignment="bottom")
    link_col.text_input("Link to these settings (add to this page's address)",
                        f"?config={encode_config(record.config)}", key=f"link-{record.run_id}")
    try:
        bundle = export_run_bundle(store, record.run_id)
    except StoreError as error:
        bundle_col.caption(f"No bundle: {error}")
        return
    bundle_col.download_button("Export run bundle", bundle, file_name=f"{record.run_id}.zip",
                               mime="application/zip", key=f"bundle-{record.run_id}",
                               help="Config, curves, summary, weights and predictions: open it on another "
                                    "machine to replay the run without training.")


run_ids = shown_run_ids()
if run_ids:
    st.divider()
    st.subheader("Your run" if len(run_ids) == 1 else f"Your runs ({len(run_ids)}, in order)")
    records = [store.load(run_id, with_metrics=False) for run_id in run_ids]
    finished = {r.run_id for r in records if not is_live(r)}
    if len(finished) < len(records):
        st.fragment(run_every=1.0)(live_view)(run_ids, finished)
    else:
        live_view(run_ids, finished)
    done = {r.run_id: r for r in records if r.run_id in finished}
    if done:
        pick = next(iter(done)) if len(done) == 1 else st.selectbox(
            "Final results of", list(done), format_func=lambda i: f"{done[i].label} ({done[i].state})",
            key="result_pick")
        final_results(store.load(pick, with_metrics=False))


def recent_runs() -> None:
    """The runs in this store, newest first; selecting one shows it above. Damaged folders say why."""
    st.subheader("Recent runs")
    recent = store.list()[:30]
    if not recent:
        st.caption(f"No runs yet in {store.root}.")
        return
    table = report.runs_table(recent)
    table["status"] = table["status"].map(status_badge)

    def open_selected():
        rows = st.session_state["recent_runs"]["selection"]["rows"]
        if rows:
            st.query_params["run"] = [table["run"][rows[0]]]
            st.session_state["train_runs"] = [table["run"][rows[0]]]

    st.dataframe(table, hide_index=True, on_select=open_selected, selection_mode="single-row", key="recent_runs",
                 column_config=PERCENT_COLUMNS, placeholder="", column_order=list(table.columns[1:]))
    st.caption("Select a row to show that run above.")


def open_bundle() -> None:
    """Replay a run exported on another machine: curves, comparisons and saliency without retraining."""
    with st.expander("📦 Open a run bundle from another machine"):
        if settings.demo_mode:
            st.caption("Demo mode: curves and metrics are imported, uploaded weights are never accepted.")
        upload = st.file_uploader("Run bundle (.zip from 'Export run bundle')", type=["zip"], key="bundle_upload")
        if upload is not None and st.button("Open this run", key="open_bundle"):
            try:
                run_id = import_run_bundle(upload.getvalue(), store, accept_weights=not settings.demo_mode)
            except StoreError as error:
                st.error(f"This bundle cannot be opened: {error}")
                return
            st.query_params["run"] = [run_id]
            st.session_state["train_runs"] = [run_id]
            st.rerun()


st.divider()
open_bundle()
if manager.active()["running"] or manager.active()["queued"]:
    st.fragment(run_every=2.0)(recent_runs)()  # statuses change while something trains
else:
    recent_runs()
