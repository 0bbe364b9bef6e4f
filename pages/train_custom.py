"""Train page, 'Custom run' tab: every knob of a RunConfig, the transfer settings and the LR finder."""
from __future__ import annotations

import streamlit as st

from explore.training import choices
from explore.training.config import RunConfig
from explore.models.registry import MODELS, TRANSFER_MODELS
from pages import multitask_section
from pages.train_lr_finder import lr_finder_panel


def custom_config(spec, settings) -> RunConfig | None:
    """Every knob of a RunConfig; returns it when the Train button is pressed."""
    left, middle, right = st.columns(3, gap="large")
    with left:
        model, options, transfer_settings, loss, class_weights = model_and_loss(spec)
        multitask = multitask_section.options(spec)  # {} unless several findings are chosen
        st.markdown("**Run**")
        seed_col, name_col = st.columns(2)
        seed = seed_col.number_input("Seed", 0, 10**6, 0, key="seed")
        name = name_col.text_input("Name", "", key="run_name", placeholder="automatic")
        device_col, precision_col = st.columns(2)
        device = device_col.selectbox("Device", choices.DEVICE_CHOICES, key="device")
        precision = precision_col.selectbox("Precision", choices.PRECISION_CHOICES, key="precision",
                                            help="auto: bf16 on GPUs from compute capability 8.0 and CPUs with AMX/AVX-512-BF16, "
                                                 "fp16 with a gradient scaler on 7.x GPUs (T4, V100), else fp32")
    with middle:
        optimiser, find_lr = optimiser_and_schedule()
    with right:
        rest = batches_epochs_regularisation(settings.epoch_limit)

    def build() -> RunConfig:
        return RunConfig(
            data=spec, model=model, model_options=tuple(options.items()), loss=loss, class_weights=class_weights,
            seed=int(seed), device=device, precision=precision, **optimiser, **rest, **transfer_settings,
            name=name or choices.automatic_name(model, options, optimiser["optimizer"], optimiser["lr"],
                                                multitask.get("tasks", ()), multitask.get("pneumonia_label_fraction", 1.0)),
        ).replace(**multitask)

    lr_finder_panel(build, find_lr, settings)
    if not st.button("Train", type="primary", key="train_custom"):
        return None
    return build()


def model_and_loss(spec):
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
    loss = st.radio("Loss", choices.losses_for(spec.num_classes), horizontal=True, key="loss",
                    format_func=choices.LOSS_TITLES.get)
    class_weights = st.checkbox("Class weights (inverse frequency)", key="class_weights")
    return model, options, transfer_settings, loss, class_weights


def optimiser_and_schedule() -> tuple[dict, bool]:
    st.markdown("**Optimiser and schedule**")
    optimizer = st.selectbox("Optimiser", list(choices.OPTIMIZER_TITLES), index=3,
                             format_func=choices.OPTIMIZER_TITLES.get, key="optimizer")
    nesterov = optimizer == "momentum" and st.checkbox("Nesterov", key="nesterov")
    lr = st.select_slider("Learning rate", choices.LEARNING_RATES, value=1e-3, format_func="{:g}".format, key="lr")
    find_lr = st.button("🔎 Find a learning rate", key="find_lr",
                        help="A short range test on a copy of this model: the learning rate rises "
                             "exponentially batch by batch while the loss is recorded. It never trains your run.")
    weight_decay = st.select_slider("Weight decay", choices.WEIGHT_DECAYS, value=0.0, format_func="{:g}".format,
                                    key="weight_decay")
    scheduler = st.selectbox("Schedule", list(choices.SCHEDULER_TITLES), format_func=choices.SCHEDULER_TITLES.get,
                             key="scheduler")
    step_size, gamma = 10, 0.1
    if scheduler == "step":
        step_size = st.number_input("Step size (epochs)", 1, 100, 10, key="step_size")
    if scheduler in choices.SCHEDULERS_WITH_GAMMA:
        gamma = st.number_input("Decay factor γ", 0.01, 0.99, choices.default_gamma(scheduler), 0.05,
                                key=f"gamma_{scheduler}")
    return {"optimizer": optimizer, "nesterov": bool(nesterov), "lr": lr, "weight_decay": weight_decay,
            "scheduler": scheduler, "step_size": int(step_size), "gamma": float(gamma)}, find_lr


def batches_epochs_regularisation(epoch_limit: int) -> dict:
    st.markdown("**Batches, epochs, regularisation**")
    batch_size = st.select_slider("Batch size", choices.BATCH_SIZES, value=32, key="batch_size")
    epochs = st.number_input("Epochs", 1, epoch_limit, min(10, epoch_limit), key="epochs")
    patience = st.number_input("Early stopping patience (0 = off)", 0, 50, 0, key="patience")
    restore_best = st.checkbox("Restore the best epoch's weights", value=True, key="restore_best",
                               disabled=patience == 0)
    augment = st.multiselect("Augmentation", choices.AUGMENT_CHOICES, key="augment")
    if st.checkbox("Horizontal flip", key="hflip"):
        augment.append("hflip")
    st.caption("Flips are off by default: the heart is on the patient's left, so a flipped "
               "chest X-ray shows anatomy that does not exist.")
    input_norm = st.selectbox("Input normalisation", list(choices.NORM_TITLES), format_func=choices.NORM_TITLES.get,
                              key="input_norm", help="How pixels are standardised before the model; statistics come "
                                                     "from the training split only, so val and test never leak in.")
    train_dev = st.number_input("Hold out a train-dev set (%)", 0, 40, 0, 5, key="train_dev",
                                help="This share of the training images is never trained on: the Mismatch "
                                     "page then splits the error into avoidable bias, variance, overfitting "
                                     "to val and data mismatch.")
    return {"batch_size": batch_size, "epochs": int(epochs), "early_stopping_patience": int(patience),
            "restore_best": restore_best, "augment": tuple(augment), "input_norm": input_norm,
            "train_dev_fraction": train_dev / 100}


def transfer_options(model: str) -> dict:
    """For a pretrained backbone: how to transfer, and — before anything is queued — whether the ImageNet
    weights are here (if not, the run trains from random weights and is named '(random init)')."""
    if model not in TRANSFER_MODELS:
        return {}
    from explore.training import transfer  # torchvision's backbones: loaded when a student first picks one

    mode = st.selectbox("Transfer mode", transfer.MODES, index=1, format_func=transfer.MODE_TITLES.get,
                        key="transfer_mode")
    head = st.radio("New head", ["course", "linear"], horizontal=True, key="transfer_head")
    scale = st.select_slider("Backbone lr = lr ×", choices.BACKBONE_LR_SCALES, value=0.1, key="backbone_lr_scale")
    status = weights_status(model)
    if not (status["available"] or status["downloadable"]):
        st.warning(f"{status['message']}\n\nThis run will be named **… (random init)**.")
    return {"transfer_mode": mode, "transfer_head": head, "backbone_lr_scale": float(scale)}


@st.cache_data(ttl=60, show_spinner=False)
def weights_status(model: str) -> dict:
    """Cached for a minute: the network check takes up to two seconds and the form reruns on every click."""
    from explore.training import transfer

    return transfer.weights_status(model, check_network=True)
