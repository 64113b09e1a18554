"""Upgrade legacy Caffe net and solver definitions to today's format.

Caffe upgrades every net it reads (``UpgradeNetAsNeeded`` in BVLC's
``src/caffe/util/upgrade_proto.cpp``) and every solver (``UpgradeSolverAsNeeded``)
before using them. This module does the same steps, in the same order, on
``pipeline.proto.caffe_pb2`` messages:

1. V0 -> V1: ``layers { layer { type: "conv" ... } }`` (pre-2014 flat layers)
   become ``layers { type: CONVOLUTION convolution_param { ... } }``; V0
   ``padding`` layers are folded into the conv/pool layer they feed.
2. Data transformation: the legacy ``scale``/``mean_file``/``crop_size``/``mirror``
   of ``data_param``/``image_data_param``/``window_data_param`` move to
   ``transform_param``.
3. V1 -> V2: ``layers { type: ENUM }`` become ``layer { type: "String" }``.
4. Inputs: ``input`` + ``input_shape``/``input_dim`` become one ``Input`` layer.
5. BatchNorm: layers that still declare their 3 statistics blobs as ``param``
   get ``lr_mult: 0`` and ``decay_mult: 0`` on them.

Every function mutates its message in place and returns human-readable notes
(empty when nothing changed), so upgrading twice is a no-op the second time.
Errors raise :class:`pipeline.errors.UpgradeError` naming the file (``source``)
and the layer. Nothing here builds or runs a net.
"""

from __future__ import annotations

from pipeline.errors import UpgradeError
from pipeline.proto import caffe_pb2

__all__ = ["upgrade_net", "net_needs_upgrade", "upgrade_solver", "solver_needs_upgrade"]

V1 = caffe_pb2.V1LayerParameter

# V1 LayerType enum value -> V2 type string (UpgradeV1LayerType). Spelled out,
# not derived, because several are irregular (SOFTMAX_LOSS, ABSVAL, IM2COL, ...).
V1_TYPE_NAMES = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DATA: "Data",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

# V0 type string -> V1 enum (UpgradeV0LayerType). Anything else is refused.
V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

_CONV, _IP, _POOL = "convolution_param", "inner_product_param", "pooling_param"
_DATA, _HDF5, _IMG, _WIN = "data_param", "hdf5_data_param", "image_data_param", "window_data_param"

# V0 field -> {V0 type it applies to: (V1 *_param field, field inside it)}
# (UpgradeV0LayerParameter). A set V0 field on any other type is dropped with a
# note, as Caffe drops it with an error log and goes on.
V0_FIELDS = {
    "num_output": {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")},
    "biasterm": {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")},
    "weight_filler": {"conv": (_CONV, "weight_filler"), "innerproduct": (_IP, "weight_filler")},
    "bias_filler": {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")},
    "pad": {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")},
    "kernelsize": {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")},
    "group": {"conv": (_CONV, "group")},
    "stride": {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")},
    "pool": {"pool": (_POOL, "pool")},  # V0 PoolMethod numbers = PoolingParameter's
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": (_DATA, "source"), "hdf5_data": (_HDF5, "source"), "images": (_IMG, "source"),
               "window_data": (_WIN, "source"), "infogain_loss": ("infogain_loss_param", "source")},
    "batchsize": {"data": (_DATA, "batch_size"), "hdf5_data": (_HDF5, "batch_size"),
                  "images": (_IMG, "batch_size"), "window_data": (_WIN, "batch_size")},
    "rand_skip": {"data": (_DATA, "rand_skip"), "images": (_IMG, "rand_skip")},
    "shuffle_images": {"images": (_IMG, "shuffle")},
    "new_height": {"images": (_IMG, "new_height")},
    "new_width": {"images": (_IMG, "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": (_WIN, "fg_threshold")},
    "det_bg_threshold": {"window_data": (_WIN, "bg_threshold")},
    "det_fg_fraction": {"window_data": (_WIN, "fg_fraction")},
    "det_context_pad": {"window_data": (_WIN, "context_pad")},
    "det_crop_mode": {"window_data": (_WIN, "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},  # whole message
    "new_num": {},       # never mapped by Caffe
    "new_channels": {},  # never mapped by Caffe
}
# V0 fields that go to transform_param whatever the layer type.
V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}

# Data layers whose *_param once held the transformation fields.
LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
V1_DATA_LAYERS = {V1.DATA: _DATA, V1.IMAGE_DATA: _IMG, V1.WINDOW_DATA: _WIN}
V2_DATA_LAYERS = {"Data": _DATA, "ImageData": _IMG, "WindowData": _WIN}

# Every V1 *_param has a V2 field of the same name; copied as is.
V1_PARAM_FIELDS = tuple(f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param"))

SOLVER_TYPE_NAMES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


def _label(name: str, index: int) -> str:
    return f"layer '{name}' (#{index})" if name else f"layer #{index}"


def _is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 6; older ones have .label
    return flag if flag is not None else fd.label == fd.LABEL_REPEATED


# --------------------------------------------------------------------------- checks

def _needs_v0(net) -> bool:
    return any(entry.HasField("layer") for entry in net.layers)


def _legacy_transform_fields(layer, sub_field: str) -> list[str]:
    if not layer.HasField(sub_field):
        return []
    sub = getattr(layer, sub_field)
    return [f for f in LEGACY_TRANSFORM_FIELDS if sub.HasField(f)]


def _data_layers(net):
    """Yield (layer message, *_param field, label) for V1 and V2 data layers."""
    for i, entry in enumerate(net.layers):
        if entry.type in V1_DATA_LAYERS:
            yield entry, V1_DATA_LAYERS[entry.type], _label(entry.name, i)
    for i, layer in enumerate(net.layer):
        if layer.type in V2_DATA_LAYERS:
            yield layer, V2_DATA_LAYERS[layer.type], _label(layer.name, i)


def _batchnorm_needs_fix(layer) -> bool:
    if layer.type != "BatchNorm" or len(layer.param) != 3:
        return False
    return any(not (p.HasField("lr_mult") and p.lr_mult == 0 and p.HasField("decay_mult") and p.decay_mult == 0)
               for p in layer.param)


def net_needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when :func:`upgrade_net` would change ``net``.

    Like Caffe's ``NetNeedsUpgrade`` (V0 or V1 ``layers``, legacy data
    transformation fields, legacy inputs, old-style BatchNorm params), except
    that a BatchNorm whose 3 param specs already read ``lr_mult: 0
    decay_mult: 0`` counts as upgraded, and V2 data layers are checked too.
    """
    if len(net.layers) or len(net.input):
        return True
    if any(_legacy_transform_fields(layer, sub) for layer, sub, _ in _data_layers(net)):
        return True
    return any(_batchnorm_needs_fix(layer) for layer in net.layer)


# --------------------------------------------------------------------------- V0 -> V1

def _fold_padding_layers(net, source: str) -> tuple[list, list[str]]:
    """Return copies of the V0 entries with ``padding`` layers folded into their consumer.

    A V0 padding layer must feed exactly one conv or pool layer through a single
    blob; its ``pad`` moves to that layer, whose bottom becomes the padding
    layer's bottom (UpgradeV0PaddingLayers).
    """
    entries = list(net.layers)
    producer = {name: None for name in net.input}  # blob -> index of last layer writing it
    kept, notes = [], []
    for i, entry in enumerate(entries):
        v0 = entry.layer
        where = f"{source}: V0 {_label(v0.name, i)}"
        if v0.type != "padding":
            copy = V1()
            copy.CopyFrom(entry)
            kept.append(copy)
        for j, blob in enumerate(entry.bottom):
            if blob not in producer:
                raise UpgradeError(f"{where}: bottom '{blob}' is neither a net input nor the top of an "
                                   f"earlier layer")
            src = producer[blob]
            if src is None or entries[src].layer.type != "padding":
                continue
            pad_entry = entries[src]
            pad_where = _label(pad_entry.layer.name, src)
            if v0.type not in ("conv", "pool"):
                raise UpgradeError(f"{where}: takes the output of padding {pad_where}, but only conv and "
                                   f"pool layers may follow a padding layer (type here: '{v0.type}')")
            if len(entry.bottom) != 1:
                raise UpgradeError(f"{where}: a conv/pool layer fed by padding {pad_where} must have "
                                   f"exactly one bottom, has {len(entry.bottom)}")
            if len(pad_entry.bottom) != 1 or len(pad_entry.top) != 1:
                raise UpgradeError(f"{source}: V0 padding {pad_where} must have exactly one bottom and "
                                   f"one top (has {len(pad_entry.bottom)} and {len(pad_entry.top)})")
            kept[-1].layer.pad = pad_entry.layer.pad
            kept[-1].bottom[j] = pad_entry.bottom[0]
            notes.append(f"{source}: V0 padding {pad_where} folded into {_label(v0.name, i)} "
                         f"as pad: {pad_entry.layer.pad}")
        for blob in entry.top:
            producer[blob] = i
    return kept, notes


def _v0_to_v1(entry, index: int, source: str) -> tuple:
    """Map one V0 entry (``layers { layer {...} bottom top }``) to a V1 layer."""
    v0 = entry.layer
    where = f"{source}: V0 {_label(v0.name, index)}"
    out, notes = V1(), []
    out.bottom.extend(entry.bottom)
    out.top.extend(entry.top)
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_TYPES:
            raise UpgradeError(f"{where}: unknown V0 layer type '{kind}' (known: "
                               f"{', '.join(sorted(V0_TYPES))}; 'padding' must feed a conv or pool layer)")
        out.type = V0_TYPES[kind]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        if kind not in targets:
            notes.append(f"{where}: V0 field '{field}' does not apply to type '{kind}'; dropped "
                         f"(as Caffe does)")
            continue
        sub_name, target = targets[kind]
        sub = getattr(out, sub_name)
        value = getattr(v0, field)
        if target is None:
            sub.CopyFrom(value)
        elif _is_repeated(sub.DESCRIPTOR.fields_by_name[target]):
            getattr(sub, target).append(value)
        elif sub.DESCRIPTOR.fields_by_name[target].message_type is not None:
            getattr(sub, target).CopyFrom(value)
        else:
            setattr(sub, target, value)
    for field, target in V0_TRANSFORM_FIELDS.items():
        if v0.HasField(field):
            setattr(out.transform_param, target, getattr(v0, field))
    return out, notes


def _upgrade_v0(net, source: str) -> list[str]:
    for i, entry in enumerate(net.layers):
        if not entry.HasField("layer"):
            raise UpgradeError(f"{source}: {_label(entry.name, i)} is a V1 entry in a net whose other "
                               f"'layers' entries are V0 ('layers {{ layer {{ ... }} }}'); write all of them "
                               f"in one format")
    kept, notes = _fold_padding_layers(net, source)
    upgraded = []
    for i, entry in enumerate(kept):
        v1, layer_notes = _v0_to_v1(entry, i, source)
        upgraded.append(v1)
        notes.extend(layer_notes)
    del net.layers[:]
    net.layers.extend(upgraded)
    return [f"{source}: upgraded {len(upgraded)} V0 layer definitions to V1"] + notes


# --------------------------------------------------------------------------- data transformation

def _upgrade_data_transform(net, source: str) -> list[str]:
    """Move legacy transformation fields of data layers into ``transform_param``.

    Caffe (UpgradeNetDataTransformation) does this for V1 ``layers`` only; we
    also do it for V2 ``layer`` entries of type Data/ImageData/WindowData, whose
    legacy fields Caffe would otherwise silently ignore. A value already in
    ``transform_param`` that disagrees with the legacy one is refused (Caffe
    lets the legacy value win silently).
    """
    todo = []
    for layer, sub_name, label in _data_layers(net):
        fields = _legacy_transform_fields(layer, sub_name)
        if not fields:
            continue
        sub, transform = getattr(layer, sub_name), layer.transform_param
        for f in fields:
            if transform.HasField(f) and getattr(transform, f) != getattr(sub, f):
                raise UpgradeError(f"{source}: {label}: {sub_name}.{f} ({getattr(sub, f)!r}) disagrees with "
                                   f"transform_param.{f} ({getattr(transform, f)!r}); keep only "
                                   f"transform_param.{f}")
        todo.append((layer, sub_name, label, fields))
    notes = []
    for layer, sub_name, label, fields in todo:
        sub = getattr(layer, sub_name)
        for f in fields:
            setattr(layer.transform_param, f, getattr(sub, f))
            sub.ClearField(f)
        notes.append(f"{source}: {label}: moved legacy {sub_name} field(s) {', '.join(fields)} "
                     f"to transform_param")
    return notes


# --------------------------------------------------------------------------- V1 -> V2

def _v1_to_v2(v1, out) -> None:
    """Fill the V2 LayerParameter ``out`` from the V1 layer ``v1`` (UpgradeV1LayerParameter)."""
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = V1_TYPE_NAMES[v1.type]
    out.blobs.extend(v1.blobs)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = mode  # same numbers: STRICT 0, PERMISSIVE 1
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for field in V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(out, field).CopyFrom(getattr(v1, field))


def _upgrade_v1(net, source: str) -> list[str]:
    count = len(net.layers)
    for v1 in net.layers:
        _v1_to_v2(v1, net.layer.add())
    net.ClearField("layers")
    return [f"{source}: upgraded {count} V1 'layers' entries to 'layer'"]


# --------------------------------------------------------------------------- inputs, BatchNorm

def _upgrade_input(net, source: str) -> list[str]:
    """Turn ``input`` + ``input_shape``/``input_dim`` into a first layer named "input" (UpgradeNetInput).

    Inputs without any shape (as in old ``.caffemodel`` files) are simply
    dropped. When both ``input_shape`` and ``input_dim`` are given, the shapes
    win, as in Caffe.
    """
    names = list(net.input)
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if not (has_shape or has_dim):
        net.ClearField("input")
        return [f"{source}: dropped legacy input field(s) without shapes: {', '.join(names)}"]
    if has_shape and len(net.input_shape) != len(names):
        raise UpgradeError(f"{source}: {len(names)} legacy input(s) ({', '.join(names)}) but "
                           f"{len(net.input_shape)} input_shape entries; give one input_shape per input")
    if not has_shape and len(net.input_dim) != 4 * len(names):
        raise UpgradeError(f"{source}: {len(names)} legacy input(s) ({', '.join(names)}) need "
                           f"{4 * len(names)} input_dim values (4 per input), got {len(net.input_dim)}")
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for i in range(len(names)):
        shape = layer.input_param.shape.add()
        if has_shape:
            shape.CopyFrom(net.input_shape[i])
        else:
            shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
    existing = list(net.layer)
    del net.layer[:]
    net.layer.append(layer)
    net.layer.extend(existing)
    notes = [f"{source}: replaced legacy input field(s) {', '.join(names)} with a first Input layer 'input'"]
    if has_shape and has_dim:
        notes.append(f"{source}: input_dim ignored because input_shape is given")
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)
    return notes


def _upgrade_batchnorm(net, source: str) -> list[str]:
    """Zero lr_mult/decay_mult of BatchNorm layers declaring 3 params (UpgradeNetBatchNorm).

    The 3 blobs are running statistics, never learned; other ParamSpec fields
    (name, share_mode) are left as they are.
    """
    notes = []
    for i, layer in enumerate(net.layer):
        if _batchnorm_needs_fix(layer):
            for p in layer.param:
                p.lr_mult = 0.0
                p.decay_mult = 0.0
            notes.append(f"{source}: BatchNorm {_label(layer.name, i)}: set lr_mult and decay_mult of "
                         f"its 3 param specs to 0")
    return notes


# --------------------------------------------------------------------------- entry points

def upgrade_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> list[str]:
    """Upgrade ``net`` in place to today's format, as Caffe does on load.

    Steps, in Caffe's order: V0 -> V1, data transformation fields, V1 -> V2,
    legacy inputs -> Input layer, BatchNorm params. See the module docstring.

    Args:
        net: the NetParameter to upgrade (text or binary, e.g. a ``.caffemodel``).
        source: the file name, used in notes and errors (default ``"<net>"``).

    Returns:
        Human-readable notes of what was changed; empty when nothing was.

    Raises:
        UpgradeError: the net mixes ``layer`` and ``layers``, a V0 layer has an
            unknown type or an invalid padding layer, legacy inputs have the
            wrong number of dims, or legacy transform fields contradict
            ``transform_param``. On error, the steps before the failing one may
            already have been applied.
    """
    if len(net.layer) and len(net.layers):
        raise UpgradeError(f"{source}: the net has both 'layer' entries (current format) and 'layers' "
                           f"entries (legacy V1/V0 format); use only one of them: upgrade the legacy "
                           f"file on its own (upgrade_net_proto_text) and move all layers to 'layer {{ }}'")
    notes: list[str] = []
    if _needs_v0(net):
        notes += _upgrade_v0(net, source)
    notes += _upgrade_data_transform(net, source)
    if len(net.layers):
        notes += _upgrade_v1(net, source)
    if len(net.input):
        notes += _upgrade_input(net, source)
    notes += _upgrade_batchnorm(net, source)
    return notes


def _inline_nets(solver):
    if solver.HasField("net_param"):
        yield "net_param", solver.net_param
    if solver.HasField("train_net_param"):
        yield "train_net_param", solver.train_net_param
    for i, net in enumerate(solver.test_net_param):
        yield f"test_net_param[{i}]", net


def solver_needs_upgrade(solver: caffe_pb2.SolverParameter) -> bool:
    """True when :func:`upgrade_solver` would change ``solver``."""
    return solver.HasField("solver_type") or any(net_needs_upgrade(n) for _, n in _inline_nets(solver))


def upgrade_solver(solver: caffe_pb2.SolverParameter, source: str = "<solver>") -> list[str]:
    """Upgrade ``solver`` in place: legacy ``solver_type`` enum -> ``type`` string, inline nets.

    Caffe (UpgradeSolverAsNeeded) only upgrades ``solver_type``; the nets it
    reads from ``net``/``train_net``/``test_net`` files are upgraded when read,
    but inline ``net_param``/``train_net_param``/``test_net_param`` are not. We
    upgrade the inline nets too with :func:`upgrade_net`, so a solver such as
    ``examples/mnist/lenet_consolidated_solver.prototxt`` with an inline V1 net
    works.

    Args:
        solver: the SolverParameter to upgrade.
        source: the file name, used in notes and errors (default ``"<solver>"``).

    Returns:
        Human-readable notes of what was changed; empty when nothing was.

    Raises:
        UpgradeError: ``solver_type`` and ``type`` are both set and disagree, or
            an inline net cannot be upgraded.
    """
    notes = []
    if solver.HasField("solver_type"):
        enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
        new_type = SOLVER_TYPE_NAMES[solver.solver_type]
        if solver.HasField("type") and solver.type != new_type:
            raise UpgradeError(f"{source}: legacy solver_type: {enum_name} (= type \"{new_type}\") and "
                               f"type: \"{solver.type}\" are both set and disagree; keep only 'type'")
        solver.type = new_type
        solver.ClearField("solver_type")
        notes.append(f"{source}: legacy solver_type: {enum_name} replaced by type: \"{new_type}\"")
    for where, net in _inline_nets(solver):
        notes += upgrade_net(net, f"{source} ({where})")
    return notes
