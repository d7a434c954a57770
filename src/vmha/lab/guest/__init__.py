"""Files of the lab guest image (package data read by `vmha.lab.image`).

`init.sh` is the guest's PID 1 (busybox sh) and `fail.cgi` the failure
control behind `http://ADDR:8080/cgi-bin/fail?mode=...`. Nothing here runs
on the host; `vmha.lab.image` packs these files into the initramfs.
"""
