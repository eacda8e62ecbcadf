-- Argo CD health of an aliasop.io/ModelDeployment, from the conditions the operator writes
-- (the same rules as kstatus, which Flux uses):
--   Progressing  the operator has not seen this generation yet, or Reconciling is True
--   Degraded     Stalled is True: nothing changes until a person acts (see the message)
--   Suspended    spec.paused, and the pinned version serves
--   Healthy      Ready is True
local hs = {status = "Progressing", message = "Waiting for aliasop to report"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for aliasop to act on generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end
local function say(type)
  local message = conditions[type].message
  if message == nil or message == "" then
    return conditions[type].reason
  end
  return message
end
if holds("Reconciling") then
  hs.status, hs.message = "Progressing", say("Reconciling")
elseif holds("Stalled") then
  hs.status, hs.message = "Degraded", say("Stalled")
elseif holds("Ready") then
  if obj.spec ~= nil and obj.spec.paused then
    hs.status = "Suspended"
  else
    hs.status = "Healthy"
  end
  hs.message = say("Ready")
elseif conditions["Ready"] ~= nil then
  hs.message = say("Ready")
end
return hs
