"""Models for tests, importable as 'tests.toy_models:function'."""

import torch
from torch import nn


def no_layers() -> nn.Module:
    """A model that outputs 10 logits but has nothing to quantize."""
    return nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool1d(10))


def digits_mlp() -> nn.Module:
    """An MLP for 1x8x8 digits: another architecture than the default CNN (random weights)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


class DigitsTransformer(nn.Module):
    """1x8x8 digits as 8 tokens of 8 pixels, one TransformerEncoderLayer, mean over tokens, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x.reshape(x.shape[0], 8, 8))).mean(dim=1))


def digits_transformer() -> nn.Module:
    """An attention model for digits (random weights): attention projections are not Linear calls."""
    return DigitsTransformer()


class DigitsLSTM(nn.Module):
    """1x8x8 digits as 8 steps of 8 pixels through an LSTM, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.lstm(x.reshape(x.shape[0], 8, 8))[0][:, -1])


def digits_lstm() -> nn.Module:
    """A recurrent model for digits (random weights)."""
    return DigitsLSTM()


def digits_weight_norm() -> nn.Module:
    """An MLP for digits whose hidden layer is weight-normalised (a weight torch recomputes at every forward)."""
    hidden = nn.utils.parametrizations.weight_norm(nn.Linear(64, 32))
    return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(32, 10))


class DigitsPositionEmbedding(nn.Module):
    """A learned position embedding added to the pixels (a weight outside any layer: it stays FP32), then an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, 1, 8, 8))
        self.hidden = nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.relu(self.hidden((x + self.position).flatten(1))))


def digits_position_embedding() -> nn.Module:
    """A model for digits (random weights) with a weight outside the quantized layers."""
    return DigitsPositionEmbedding()


class TokenGRU(nn.Module):
    """Sequences of integer token ids (0-16, e.g. digits' 64 pixel values) through an embedding, a GRU and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(17, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, tokens):
        return self.head(self.gru(self.embed(tokens))[0][:, -1])


def token_gru() -> nn.Module:
    """A text-like model on integer inputs (random weights); its embedding table stays FP32."""
    return TokenGRU()


class TiedTokenModel(nn.Module):
    """A language-model-like classifier: its output projection reuses the embedding table (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(17, 8)
        self.mix = nn.Linear(8, 8)
        self.unembed = nn.Linear(8, 17, bias=False)
        self.unembed.weight = self.embed.weight
        self.head = nn.Linear(17, 10)

    def forward(self, tokens):
        return self.head(self.unembed(torch.relu(self.mix(self.embed(tokens)))).mean(1))


def tied_token_model() -> nn.Module:
    """Tied weights on integer inputs (random weights): the shared table is one layer."""
    return TiedTokenModel()


class DigitsDictOutput(nn.Module):
    """A CNN with BatchNorm whose forward returns a dict, as Hugging Face classifiers do: logits and features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        features = torch.relu(self.bn(self.conv(x))).flatten(1)
        return {"features": features, "logits": self.head(features)}


def digits_dict_output() -> nn.Module:
    """Logits under output["logits"] (random weights)."""
    return DigitsDictOutput()


class DigitsBinary(nn.Module):
    """A binary classifier with BatchNorm and one logit per sample, as trained with BCEWithLogitsLoss."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def digits_binary() -> nn.Module:
    """One logit per sample (random weights), for two-class data."""
    return DigitsBinary()
