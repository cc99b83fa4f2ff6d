"""Reference torch implementations of the three supported architectures, for parity tests and benchmarks only.

Written from the published layouts (train-procgen-pfrl ImpalaCNN, train-procgen-pytorch ImpalaModel +
CategoricalPolicy, the 4-stage interpretable CNN); inputs are uint8 NHWC frames scaled by 1/255 as the agents do,
in the model's own dtype: ``random_model(...).double()`` is the float64 reference the precision checks compare
both float32 sides against.
"""

import torch
from torch import nn
from torch.nn import functional as F


def _images(obs, model: nn.Module):
    """uint8 NHWC frames as NCHW images in [0, 1], in the model's dtype (float32, or float64 for a reference)."""
    return obs.to(next(model.parameters()).dtype).permute(0, 3, 1, 2) / 255.0


class PfrlResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class PfrlConvSequence(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.max_pool2d = nn.MaxPool2d(3, stride=2, padding=1)
        self.res_block0 = PfrlResidualBlock(out_channels)
        self.res_block1 = PfrlResidualBlock(out_channels)

    def forward(self, x):
        return self.res_block1(self.res_block0(self.max_pool2d(self.conv(x))))


class PfrlImpala(nn.Module):
    def __init__(self, num_actions=15, channels=(16, 32, 32)):
        super().__init__()
        seqs, c = [], 3
        for out in channels:
            seqs.append(PfrlConvSequence(c, out))
            c = out
        self.conv_seqs = nn.ModuleList(seqs)
        self.hidden_fc = nn.Linear(c * 8 * 8, 256)
        self.logits_fc = nn.Linear(256, num_actions)
        self.value_fc = nn.Linear(256, 1)

    def forward(self, obs):
        x = _images(obs, self)
        for seq in self.conv_seqs:
            x = seq(x)
        x = F.relu(self.hidden_fc(F.relu(torch.flatten(x, 1))))
        return self.logits_fc(x), self.value_fc(x)[:, 0]


class PtResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv2(nn.ReLU()(self.conv1(nn.ReLU()(x)))) + x


class PtImpalaBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.res1 = PtResidualBlock(out_channels)
        self.res2 = PtResidualBlock(out_channels)

    def forward(self, x):
        x = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)(self.conv(x))
        return self.res2(self.res1(x))


class PtImpalaModel(nn.Module):
    def __init__(self, channels=(16, 32, 32)):
        super().__init__()
        self.block1 = PtImpalaBlock(3, channels[0])
        self.block2 = PtImpalaBlock(channels[0], channels[1])
        self.block3 = PtImpalaBlock(channels[1], channels[2])
        self.fc = nn.Linear(channels[2] * 8 * 8, 256)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        x = nn.ReLU()(x).reshape(x.size(0), -1)
        return nn.ReLU()(self.fc(x))


class ProcgenToolsPolicy(nn.Module):
    def __init__(self, num_actions=15, channels=(16, 32, 32)):
        super().__init__()
        self.embedder = PtImpalaModel(channels)
        self.fc_policy = nn.Linear(256, num_actions)
        self.fc_value = nn.Linear(256, 1)

    def forward(self, obs):
        hidden = self.embedder(_images(obs, self))
        return self.fc_policy(hidden), self.fc_value(hidden).reshape(-1)


class InterpretableCNN(nn.Module):
    def __init__(self, num_actions=15):
        super().__init__()
        self.conv1a = nn.Conv2d(3, 16, 7, padding=3)
        self.pool1 = nn.LPPool2d(2, kernel_size=2, stride=2)
        self.conv2a = nn.Conv2d(16, 32, 5, padding=2)
        self.conv2b = nn.Conv2d(32, 32, 5, padding=2)
        self.pool2 = nn.LPPool2d(2, kernel_size=2, stride=2)
        self.conv3a = nn.Conv2d(32, 32, 5, padding=2)
        self.pool3 = nn.LPPool2d(2, kernel_size=2, stride=2)
        self.conv4a = nn.Conv2d(32, 32, 5, padding=2)
        self.pool4 = nn.LPPool2d(2, kernel_size=2, stride=2)
        self.dropout = nn.Dropout(0.1)
        self.fc1 = nn.Linear(32 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 512)
        self.fc3 = nn.Linear(512, num_actions)
        self.value_fc = nn.Linear(512, 1)

    def forward(self, obs):
        x = _images(obs, self)
        x = self.pool1(F.relu(self.conv1a(x)))
        x = self.pool2(F.relu(self.conv2b(F.relu(self.conv2a(x)))))
        x = self.pool3(F.relu(self.conv3a(x)))
        x = self.pool4(F.relu(self.conv4a(x)))
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        x = self.dropout(F.relu(self.fc2(x)))
        return self.fc3(x), self.value_fc(x)[:, 0]


TORCH_MODELS = {
    "impala": PfrlImpala,
    "impala-procgen-tools": ProcgenToolsPolicy,
    "interpretable-cnn": InterpretableCNN,
}


def random_model(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    """A torch model with random weights and clearly non-zero biases, in eval mode."""
    torch.manual_seed(seed)
    model = TORCH_MODELS[arch](**kwargs).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return model


def hooked_activations(model: nn.Module, obs) -> tuple[dict, tuple]:
    """Every submodule's forward-hook output as NHWC/2-D numpy arrays, and the model's (logits, value)."""
    acts, handles = {}, []
    for name, module in model.named_modules():
        if name and not isinstance(module, (nn.ModuleList, nn.Dropout)):

            def hook(_m, _i, out, name=name):
                out = out.detach()
                acts[name] = (out.permute(0, 2, 3, 1) if out.ndim == 4 else out).numpy()

            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        logits, value = model(torch.as_tensor(obs))
    for h in handles:
        h.remove()
    return acts, (logits.numpy(), value.numpy())
