-- Argo CD health of a meetingbots.dev ScheduledBot; docs/gitops.md explains each mapping.
-- Argo runs custom checks with the base and table libraries only: no string or math.
--
-- A sync with waves or hooks waits while a resource is Progressing or Suspended, so
-- only states that end by themselves within seconds are Progressing. States that wait
-- for the clock (scheduled, staged), for people (waiting_room) or for the meeting
-- (joined, recording) are Healthy, and so is ended, as a completed Job is.
local health = {
  scheduled = "Healthy",
  staged = "Healthy",
  joining = "Progressing",
  waiting_room = "Healthy",
  joined = "Healthy",
  recording = "Healthy",
  leaving = "Progressing",
  ended = "Healthy",
  failed = "Degraded",
}

local hs = {}
local status = obj.status
if status == nil or status.state == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to accept the bot"
  return hs
end

local state = status.state
hs.message = state
if status.message ~= nil and status.message ~= "" then
  hs.message = state .. ": " .. status.message
end

-- Until then, a rescheduled bot's status still describes the previous joinAt.
local generation = obj.metadata.generation
if (state == "scheduled" or state == "staged") and generation ~= nil
    and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to act on the new spec (generation " .. generation .. ")"
  return hs
end

hs.status = health[state]
if hs.status == "Degraded" and status.reason ~= nil then
  hs.message = state .. " (" .. status.reason .. "): " .. (status.message or "")
end
if hs.status == nil then
  -- A state this check does not know (a newer operator): the conditions still tell.
  hs.status = "Progressing"
  for _, condition in ipairs(status.conditions or {}) do
    if condition.type == "Stalled" and condition.status == "True" then
      hs.status = "Degraded"
      return hs
    end
    if condition.type == "Ready" and condition.status == "True" then
      hs.status = "Healthy"
    end
  end
end
return hs
