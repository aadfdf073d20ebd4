"""NVIDIA Parakeet (NeMo FastConformer with TDT, RNN-T or CTC heads): multilingual ASR."""
