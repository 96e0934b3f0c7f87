# Package.cmake: the Debian package of the embedded deployment (`make package`, docs/deployment.md).
#
#   /usr/bin/iotd                      the binary, stripped (the RelWithDebInfo build is ~55 MB)
#   /lib/systemd/system/iotd.service   runs `iotd all` as the system user iotd
#   /etc/iotd/iotd.env                 its settings (a conffile: kept across upgrades)
#   postinst, prerm, postrm            the user, /var/lib/iotd, enable/start/stop (packaging/debian)
#
# Everything is installed as the component `deb` with paths relative to the package root, so a
# plain `cmake --install` never writes to the host's /etc or /lib, and install rules that other
# parts of the project may add stay out of the package.

set(IOTD_PACKAGE_MAINTAINER "iotd maintainers <iotd@example.invalid>"
    CACHE STRING "Maintainer field of the Debian package")
set(IOTD_PACKAGE_HOMEPAGE "https://example.invalid/iotd"
    CACHE STRING "Homepage field of the Debian package")

set(_iotd_pkg ${PROJECT_SOURCE_DIR}/packaging)
install(TARGETS iotd RUNTIME DESTINATION usr/bin COMPONENT deb)
install(FILES ${_iotd_pkg}/iotd.service DESTINATION lib/systemd/system COMPONENT deb)
# 0640: MONGO_URL and KAFKA_CONFIG may carry credentials; systemd reads the file as root.
install(FILES ${_iotd_pkg}/iotd.env DESTINATION etc/iotd COMPONENT deb
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME iotd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${IOTD_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "IoT telemetry platform: ingest, aggregates, alerts, dashboard API")
# The Description's first line is the summary; this is the text after it.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "iotd receives device readings over HTTP (port 8001), aggregates them in
tumbling windows, raises threshold alerts and serves them on a dashboard
API (port 8002). This package runs the embedded deployment, `iotd all`,
as the systemd service iotd.service with its data (an embedded message bus
and a SQLite store) in /var/lib/iotd; settings are in /etc/iotd/iotd.env.")
set(CPACK_PACKAGING_INSTALL_PREFIX "/")
set(CPACK_INSTALL_CMAKE_PROJECTS "${PROJECT_BINARY_DIR};${PROJECT_NAME};deb;/")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY "${PROJECT_BINARY_DIR}/package")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # iotd_<version>-<release>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "${IOTD_PACKAGE_HOMEPAGE}")
# The shared libraries (dpkg-shlibdeps) plus what the maintainer scripts call: adduser/deluser and
# deb-systemd-helper/deb-systemd-invoke (init-system-helpers). systemd itself is not required:
# without it the unit is just not started (containers, chroots).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, init-system-helpers (>= 1.54~)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${_iotd_pkg}/debian/conffiles ${_iotd_pkg}/debian/postinst ${_iotd_pkg}/debian/prerm
    ${_iotd_pkg}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
