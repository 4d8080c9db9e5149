"""Small shared fixtures-by-function for the tests: tiny data and narrow models."""

import torch

import mwt


def demo_subset(split: str = "train", per_class: int = 50):
    """A stratified slice of the embedded demo data, ``per_class`` images of each class."""
    data = mwt.load_dataset("demo", split)
    idx = torch.cat([torch.nonzero(data.labels == c).flatten()[:per_class]
                     for c in range(data.num_classes)])
    return data.subset(idx)


def tiny_modular(name: str = "vgg16", width: float = 0.125, in_channels: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return mwt.make_modular(mwt.create_model(name, 10, in_channels, width))


def small_run(out, per_class: int = 6, batch_size: int = 30, model: str = "vgg16"):
    """A finished one-epoch run of a tiny modular model (VGG16) on a slice of the demo data, with
    the config `mwt train` writes, so that the CLI's modularize/reuse/resume can work on it."""
    train, test = demo_subset("train", per_class), demo_subset("test", 2)
    spec = mwt.RunSpec(model=model, dataset="demo", width=0.125,
                       train=mwt.TrainConfig(epochs=1, batch_size=batch_size))
    info = {"dataset": "demo", "classes": list(train.classes), "mean": list(train.mean),
            "std": list(train.std), "run": spec.to_dict()}
    return mwt.train(tiny_modular(model), train, test, config=spec.train, out=out,
                     progress=False, verbose=False, device="cpu", run_info=info)


class ConstGate(torch.nn.Module):
    """Stands in for a gate: the same mask for every sample."""

    def __init__(self, values):
        super().__init__()
        self.register_buffer("values", values)

    def forward(self, pooled):
        return self.values.expand(pooled.shape[0], -1)


def sparse_modular(name, seed=0, in_channels=3):
    """A narrow modular model whose gates close about half the kernels, differently per layer."""
    torch.manual_seed(seed)
    model = mwt.make_modular(mwt.create_model(name, 10, in_channels, 0.25)).eval()
    with torch.no_grad():
        for layer in mwt.gates.gated_layers(model):
            gate = model.get_submodule(layer.gate)
            gate.fc2.weight.mul_(0.05)
            gate.fc2.bias.uniform_(-1.0, 1.0)
        for m in model.modules():  # non-trivial BN statistics so slicing errors would show
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def with_constant_gates(model, kernels_values, only=None):
    """The modular model with every gate (or those named in ``only``) replaced by a fixed
    per-kernel value vector (``kernels_values`` covers all gated kernels)."""
    import copy

    ref = copy.deepcopy(model)
    offset = 0
    for layer in mwt.gates.gated_layers(ref):
        if only is None or layer.gate in only:
            ref.add_submodule(layer.gate,
                              ConstGate(kernels_values[offset:offset + layer.kernels]))
        offset += layer.kernels
    return ref


class UserCNN(torch.nn.Module):
    """A user's own CNN: Conv/BN/ReLU/pool/add/Linear, not from our registry."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.a = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.a(x)
        x = self.b(x) + x
        x = torch.nn.functional.max_pool2d(self.c(x), 2)
        return self.head(x.mean((2, 3)))


def convs_in_call_order(model, input_shape):
    """The Conv2d modules of ``model`` in the order one forward pass calls them (each once),
    found with hooks rather than fx: an oracle for the gating rule."""
    called = []
    hooks = [m.register_forward_pre_hook(lambda m, args: called.append(m) if m not in called
                                         else None)
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return called


def modularized(name: str, per_class: int = 30):
    """(a sparse modular ``name`` on 1-channel input, its tau-0.9 modules, the demo slice they
    were computed on)."""
    torch.manual_seed(0)
    model = sparse_modular(name, in_channels=1)
    train = demo_subset("train", per_class)
    return model, mwt.modularize(model, train, 0.9, classes=train.classes), train


def randomise(model, seed: int = 0):
    """A modular model with gates that close about half the kernels, differently per sample,
    and BatchNorm statistics (and conv biases) that make BN(0) != 0, so a wrong cut shows; in
    eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in mwt.gates.gated_layers(model):
            gate = model.get_submodule(layer.gate)
            gate.fc2.weight.mul_(0.05)
            gate.fc2.bias.copy_(torch.rand(gate.fc2.bias.shape, generator=g) * 1.5 - 0.75)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.rand(m.out_channels, generator=g) * 0.6 - 0.3)
    return model.eval()


def hand_macs(module, shape) -> int:
    """Conv (fvcore: output elements x in / groups x kh x kw), BatchNorm (5 per element) and
    Linear MACs of one sample, from the module's own layers and its feature map sizes."""
    nn = torch.nn
    sizes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, o.shape))
             for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        module(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    total = 0
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += sizes[name].numel() * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.BatchNorm2d):
            total += 5 * sizes[name].numel()
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


def sample_kernels(model, x):
    """``(kernels, logits, masks)`` of a modular model on ``x``: the union of the samples'
    kernel sets, with every layer keeping at least one kernel (as modules do)."""
    with torch.no_grad():
        logits, masks = model(x, return_masks=True)
    kernels = (torch.cat(masks, 1) > 0).any(0)
    offset = 0
    for layer in mwt.gates.gated_layers(model):
        if not bool(kernels[offset:offset + layer.kernels].any()):
            kernels[offset] = True
        offset += layer.kernels
    return kernels, logits, masks
