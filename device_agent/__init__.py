"""LoLa-DEFT device agent: what runs on a device (connection, profiling, channel, metrics, the
block trainer). The model and data code it shares with the coordinator is lola_deft.ml."""
