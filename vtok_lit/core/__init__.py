"""The VTok core: plain ``nn.Module``s shared by every LightningModule (no Lightning here)."""
