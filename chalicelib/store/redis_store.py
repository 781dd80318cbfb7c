"""The Redis plan store: every stored object under its own key, each operation one Lua script.

Keys, all under a configurable prefix (`plan-api:` by default):
- `object:{type}:{id}` the stored object as JSON;
- `owners` a hash from object identity to the plan id that owns it;
- `plan:{id}` a hash with the plan's version, ETag, root identity and member identities;
- `plans` a sorted set of plan ids (all scores 0), read in id order for listing;
- `version:{id}` the last version given to the plan, kept after a delete so versions only grow;
- `outbox` a stream of events for the queue relay.

A Lua script runs atomically, so a read never sees half a plan and a write's version check,
ownership check, object writes and outbox append happen as one step. A read is one EVALSHA and
a write two (the read the service does first, then the write script), whatever the plan's size.

Limitation: the scripts build key names from the prefix, so they need a single Redis server or
a primary with replicas; Redis Cluster is not supported.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from chalicelib.errors import OwnershipConflict, PlanAlreadyExists, PlanNotFound
from chalicelib.plan_graph import StoredObject
from chalicelib.store.base import (OutboxEntry, PlanSnapshot, PlanWrite, VersionConflict,
                                   build_event, utc_now_iso)

# MGET is called in slices because Lua's unpack() has a stack limit of a few thousand values.
READ_PLAN_LUA = """
local function read_plan(prefix, plan_id)
  local meta = redis.call('HMGET', prefix .. 'plan:' .. plan_id, 'version', 'etag', 'root', 'members')
  if not meta[1] then return false end
  local members = cjson.decode(meta[4])
  local result = {plan_id, meta[1], meta[2], meta[3], meta[4]}
  local slice = {}
  for index, identity in ipairs(members) do
    slice[#slice + 1] = prefix .. 'object:' .. identity
    if #slice == 500 or index == #members then
      local values = redis.call('MGET', unpack(slice))
      for _, value in ipairs(values) do result[#result + 1] = value end
      slice = {}
    end
  end
  return result
end
"""

GET_PLAN_SCRIPT = READ_PLAN_LUA + """
return read_plan(ARGV[1], ARGV[2])
"""

LIST_PLANS_SCRIPT = READ_PLAN_LUA + """
local prefix, after, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local start = '-'
if after ~= '' then start = '(' .. after end
local ids = redis.call('ZRANGE', prefix .. 'plans', start, '+', 'BYLEX', 'LIMIT', 0, limit)
local plans = {}
for _, plan_id in ipairs(ids) do
  local plan = read_plan(prefix, plan_id)
  if plan then plans[#plans + 1] = plan end
end
return plans
"""

# ARGV: prefix, plan_id, expected_version ('' to create), root, etag, members_json,
#       document_json, occurred_at, upsert_count, (identity, json) * upsert_count,
#       delete_count, identity * delete_count
SAVE_PLAN_SCRIPT = """
local prefix, plan_id, expected = ARGV[1], ARGV[2], ARGV[3]
local plan_key = prefix .. 'plan:' .. plan_id
local owners_key = prefix .. 'owners'
local current = redis.call('HGET', plan_key, 'version')
if expected == '' then
  if current then return {'exists'} end
else
  if not current then return {'missing'} end
  if current ~= expected then return {'conflict', current} end
end

local upsert_count = tonumber(ARGV[9])
local delete_base = 10 + 2 * upsert_count
for index = 0, upsert_count - 1 do
  local identity = ARGV[10 + 2 * index]
  local owner = redis.call('HGET', owners_key, identity)
  if owner and owner ~= plan_id then return {'owned', identity, owner} end
end

for index = 1, tonumber(ARGV[delete_base]) do
  local identity = ARGV[delete_base + index]
  redis.call('DEL', prefix .. 'object:' .. identity)
  redis.call('HDEL', owners_key, identity)
end
for index = 0, upsert_count - 1 do
  local identity = ARGV[10 + 2 * index]
  redis.call('SET', prefix .. 'object:' .. identity, ARGV[11 + 2 * index])
  redis.call('HSET', owners_key, identity, plan_id)
end

local version = redis.call('INCR', prefix .. 'version:' .. plan_id)
redis.call('HSET', plan_key, 'version', version, 'etag', ARGV[5], 'root', ARGV[4], 'members', ARGV[6])
redis.call('ZADD', prefix .. 'plans', 0, plan_id)
redis.call('XADD', prefix .. 'outbox', '*', 'plan_id', plan_id, 'version', version,
  'type', 'plan.upserted', 'etag', ARGV[5], 'plan', ARGV[7], 'occurred_at', ARGV[8])
return {'ok', version}
"""

# ARGV: prefix, plan_id, expected_version, occurred_at
DELETE_PLAN_SCRIPT = """
local prefix, plan_id, expected = ARGV[1], ARGV[2], ARGV[3]
local plan_key = prefix .. 'plan:' .. plan_id
local current = redis.call('HGET', plan_key, 'version')
if not current then return {'missing'} end
if current ~= expected then return {'conflict', current} end
local members = cjson.decode(redis.call('HGET', plan_key, 'members'))
for _, identity in ipairs(members) do
  redis.call('DEL', prefix .. 'object:' .. identity)
  redis.call('HDEL', prefix .. 'owners', identity)
end
redis.call('DEL', plan_key)
redis.call('ZREM', prefix .. 'plans', plan_id)
local version = redis.call('INCR', prefix .. 'version:' .. plan_id)
redis.call('XADD', prefix .. 'outbox', '*', 'plan_id', plan_id, 'version', version,
  'type', 'plan.deleted', 'etag', '', 'plan', '', 'occurred_at', ARGV[4])
return {'ok', version}
"""


class RedisPlanStore:
    """PlanStore on one Redis server."""

    def __init__(self, url: str, *, prefix: str = "plan-api:") -> None:
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                           health_check_interval=30)
        self._get_plan = self.client.register_script(GET_PLAN_SCRIPT)
        self._list_plans = self.client.register_script(LIST_PLANS_SCRIPT)
        self._save_plan = self.client.register_script(SAVE_PLAN_SCRIPT)
        self._delete_plan = self.client.register_script(DELETE_PLAN_SCRIPT)
        self._scripts_loaded = False

    def _ensure_scripts(self) -> None:
        """Load every script once, so each later call is exactly one EVALSHA round trip."""
        if self._scripts_loaded:
            return
        pipeline = self.client.pipeline(transaction=False)
        for script in (self._get_plan, self._list_plans, self._save_plan, self._delete_plan):
            pipeline.script_load(script.script)
        pipeline.execute()
        self._scripts_loaded = True

    def _run(self, script: Any, args: list[Any]) -> Any:
        self._ensure_scripts()
        # redis-py's Script falls back to EVAL when the server lost its script cache.
        return script(args=args)

    def get(self, plan_id: str) -> PlanSnapshot | None:
        reply = self._run(self._get_plan, [self.prefix, plan_id])
        return self._parse_plan(reply) if reply else None

    def list_plans(self, after: str | None, limit: int) -> list[PlanSnapshot]:
        replies = self._run(self._list_plans, [self.prefix, after or "", limit])
        return [self._parse_plan(reply) for reply in replies]

    @staticmethod
    def _parse_plan(reply: list[Any]) -> PlanSnapshot:
        plan_id, version, etag, root, members_json = (
            value.decode() if isinstance(value, bytes) else value for value in reply[:5])
        members = json.loads(members_json)
        objects: dict[str, StoredObject] = {}
        for identity, value in zip(members, reply[5:]):
            if value is None:
                raise RuntimeError(f"Plan '{plan_id}' lists {identity}, but its key is missing.")
            objects[identity] = StoredObject.from_json(json.loads(value))
        return PlanSnapshot(plan_id=plan_id, version=int(version), etag=etag, root=root,
                            objects=objects)

    def save(self, write: PlanWrite) -> int:
        args: list[Any] = [
            self.prefix, write.plan_id,
            "" if write.expected_version is None else str(write.expected_version),
            write.root, write.etag, json.dumps(write.members), write.document_json,
            utc_now_iso(), len(write.upserts),
        ]
        for identity, stored in write.upserts.items():
            args.extend((identity, json.dumps(stored.to_json())))
        args.append(len(write.deletes))
        args.extend(write.deletes)
        return self._check_reply(write.plan_id, self._run(self._save_plan, args))

    def delete(self, plan_id: str, expected_version: int) -> int:
        reply = self._run(self._delete_plan,
                          [self.prefix, plan_id, str(expected_version), utc_now_iso()])
        return self._check_reply(plan_id, reply)

    @staticmethod
    def _check_reply(plan_id: str, reply: list[Any]) -> int:
        status = reply[0].decode()
        if status == "ok":
            return int(reply[1])
        if status == "exists":
            raise PlanAlreadyExists(f"A plan with id '{plan_id}' already exists.")
        if status == "missing":
            raise PlanNotFound(f"No plan with id '{plan_id}'.")
        if status == "conflict":
            raise VersionConflict(plan_id)
        if status == "owned":
            raise OwnershipConflict(
                f"The object {reply[1].decode()} belongs to another plan ('{reply[2].decode()}').")
        raise RuntimeError(f"Unexpected reply from the save script: {reply!r}")

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        entries = self.client.xrange(self.prefix + "outbox", count=limit)
        result = []
        for entry_id, fields in entries:
            values = {key.decode(): value.decode() for key, value in fields.items()}
            result.append(OutboxEntry(entry_id=entry_id.decode(), event=event_from_fields(values)))
        return result

    def remove_outbox(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self.client.xdel(self.prefix + "outbox", *entry_ids)

    def check_health(self) -> None:
        self.client.ping()


def event_from_fields(fields: dict[str, str]) -> dict[str, Any]:
    """Turn the fields of one outbox stream entry into the event the queue carries."""
    return build_event(plan_id=fields["plan_id"], version=int(fields["version"]),
                       event_type=fields["type"], etag=fields["etag"] or None,
                       plan_json=fields["plan"] or None, occurred_at=fields["occurred_at"])
