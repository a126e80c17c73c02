-- Argo CD health of a meetingbots.dev BotSchedule; docs/gitops.md explains each mapping.
-- Argo runs custom checks with the base and table libraries only: no string or math.
--
-- A schedule is Healthy while it is planned (suspended too: Argo CD holds a sync on
-- Suspended, and a paused series must not block its Application), Degraded while it
-- is Stalled (an invalid spec, a feed that cannot be read), else Progressing.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to plan the schedule"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to act on the new spec (generation " .. generation .. ")"
  return hs
end

local conditions = {}
for _, condition in ipairs(status.conditions) do
  conditions[condition.type] = condition
end
local ready, stalled = conditions["Ready"], conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  if status.next ~= nil and status.next[1] ~= nil and status.next[1].time ~= nil then
    hs.message = hs.message .. "; next: " .. status.next[1].time
  end
  return hs
end
hs.status = "Progressing"
hs.message = (ready and ready.message) or "planning"
return hs
