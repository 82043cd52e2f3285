"""The three stages of a worker, each a consumer group over one topic.

- `streams.stages.stage`: what every stage's loop does (the consumer, the backlog check,
  watermark alignment, idle flush, when to checkpoint);
- `streams.stages.progress`: the loop's decisions (which windows may be scored, which
  partitions pause or flush), pure functions of what it knows of each partition;
- `streams.stages.partitions`: what a stage's partitions hold, restore and checkpoint;
- `streams.stages.member`: when a stage may checkpoint and commit;
- `streams.stages.accounts`, `streams.stages.blocks`, `streams.stages.campaigns`: the stages.

Topics are read with aiokafka ``getmany`` in batches: Faust's per-message path costs ~150 us a
message here (measured on the 2-core machine), which would cap a worker at ~6,500 events/s; a
batch costs a few microseconds per message.
"""

from streams.stages.accounts import AccountStage
from streams.stages.blocks import BlockStage
from streams.stages.campaigns import CampaignStage
from streams.stages.member import Member
from streams.stages.stage import Stage

__all__ = ["AccountStage", "BlockStage", "CampaignStage", "Member", "Stage"]
