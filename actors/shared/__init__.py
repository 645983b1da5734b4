"""What every actor shares: the loop, the outbox, snapshots, the data dir lock, the stages."""
