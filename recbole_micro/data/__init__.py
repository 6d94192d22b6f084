from recbole_micro.data.dataset import MultimodalDataset

__all__ = ["MultimodalDataset"]
