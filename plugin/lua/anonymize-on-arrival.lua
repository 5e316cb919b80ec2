-- Anonymize each instance as it arrives, through the consistent anonymization plugin.
--
-- Load it with Orthanc's "LuaScripts" option, e.g. in orthanc.json:
--   "LuaScripts": ["plugin/lua/anonymize-on-arrival.lua"]
-- Every instance received (DICOM network, REST upload...) is anonymized on its own; since the
-- plugin gives the same original UID the same pseudonym in every call, the instances of one
-- study land in one anonymized study, frames of reference and references intact. The original
-- is deleted only once its anonymized copy is stored; if anonymization fails (the plugin checks
-- every output), the original stays and the error is in Orthanc's log.

-- The options of each call, as for POST /instances/{id}/anonymize (e.g. '{"Keep": ["StudyDescription"]}').
local ANONYMIZATION_OPTIONS = '{}'

function OnStoredInstance(instanceId, tags, metadata, origin)
   -- What this script stores comes back here with the "Lua" origin: leave it alone.
   if origin['RequestOrigin'] == 'Lua' or origin['RequestOrigin'] == 'Plugins' then
      return
   end
   -- Lua's RestApiPost goes through plugins: this is the plugin's /anonymize, not native's.
   local anonymized = RestApiPost('/instances/' .. instanceId .. '/anonymize', ANONYMIZATION_OPTIONS)
   local stored = ParseJson(RestApiPost('/instances', anonymized))
   if stored['Status'] == 'Success' or stored['Status'] == 'AlreadyStored' then
      RestApiDelete('/instances/' .. instanceId)
   end
end
