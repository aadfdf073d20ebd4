"""GigaAM v2/v3 (salute-developers): Conformer encoder with CTC or RNN-T head, Russian ASR."""
