# Shared by scripts/demo.sh and bench/*.sh (sourced, not run).
#
# Background processes: append each pid to `pids`; at exit they are stopped and, when the
# script set `tmp`, that folder is removed.
pids=()
stop_background() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${tmp:-}" ]; then rm -rf "$tmp"; fi
}
trap stop_background EXIT

# write_orthanc_config FILE NAME DIR HTTP_PORT DICOM_PORT: Orthanc (AE title ORTHANC) storing
# under DIR, with its DICOMweb plugin at /dicom-web/, as the tests start it (tests/common).
write_orthanc_config() {
  cat >"$1" <<JSON
{ "Name": "$2", "StorageDirectory": "$3", "IndexDirectory": "$3",
  "HttpPort": $4, "DicomPort": $5, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
}
