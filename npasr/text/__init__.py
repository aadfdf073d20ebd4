"""Text-side helpers shared by model families (byte-level BPE)."""
