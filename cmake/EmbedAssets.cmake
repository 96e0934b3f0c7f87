# EmbedAssets.cmake: front-end assets compiled into the binary, so nothing is fetched from the
# internet at run time.
#
#   iot_npm_install()   installs web/package-lock.json into ${IOT_NPM_DIR}/node_modules with
#                       `npm ci` at build time (again only when package.json or package-lock.json
#                       change), never into the source tree. Sets IOT_NPM_DIR and IOT_NPM_STAMP.
#   iot_embed_assets(NAME iot_docs_assets FUNCTION DocsAssets
#                    FILES "swagger-ui.css=${IOT_NPM_DIR}/node_modules/swagger-ui-dist/swagger-ui.css"
#                          "index.html=${CMAKE_CURRENT_SOURCE_DIR}/index.html"
#                    DEPENDS ${IOT_NPM_STAMP})
#                       a static library defining `const iot::web::AssetSet& iot::web::DocsAssets()`
#                       (declared in the generated header "<NAME>.h") with each file's bytes,
#                       content type (from its extension) and a strong ETag (from its SHA-256).
#                       Each FILES entry is "<name>=<absolute path>"; files under node_modules
#                       must list ${IOT_NPM_STAMP} in DEPENDS.
include_guard(GLOBAL)

set(IOT_EMBED_GEN ${CMAKE_CURRENT_LIST_DIR}/EmbedAssetsGen.cmake)

function(iot_npm_install)
  find_program(IOT_NPM npm)
  if(NOT IOT_NPM)
    message(FATAL_ERROR "npm not found: the build embeds front-end assets from the npm registry "
                        "(web/package-lock.json). Install Node.js and npm (Debian: "
                        "apt-get install nodejs npm, or run scripts/install-deps.sh).")
  endif()
  set(dir ${CMAKE_BINARY_DIR}/web)
  set(stamp ${dir}/node_modules/.iotd-npm-ci.stamp)
  add_custom_command(
    OUTPUT ${stamp}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${dir}
    COMMAND ${CMAKE_COMMAND} -E copy_if_different ${PROJECT_SOURCE_DIR}/web/package.json
            ${PROJECT_SOURCE_DIR}/web/package-lock.json ${dir}
    # --ignore-scripts: no package runs code at install (swagger-ui-dist's analytics dependency
    # would); --prefer-offline: the npm cache suffices once it holds the locked versions.
    COMMAND ${IOT_NPM} ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error
    COMMAND ${CMAKE_COMMAND} -E touch ${stamp}
    WORKING_DIRECTORY ${dir}
    DEPENDS ${PROJECT_SOURCE_DIR}/web/package.json ${PROJECT_SOURCE_DIR}/web/package-lock.json
    COMMENT "npm ci (web/package-lock.json)"
    VERBATIM)
  add_custom_target(iot_npm_install DEPENDS ${stamp})
  set(IOT_NPM_DIR ${dir} PARENT_SCOPE)
  set(IOT_NPM_STAMP ${stamp} PARENT_SCOPE)
endfunction()

function(iot_embed_assets)
  cmake_parse_arguments(ARG "" "NAME;FUNCTION" "FILES;DEPENDS" ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME})
  set(manifest ${out}/manifest.txt)
  set(lines "")
  set(deps "")
  foreach(entry IN LISTS ARG_FILES)
    if(NOT entry MATCHES "^([^=]+)=(.+)$")
      message(FATAL_ERROR "iot_embed_assets(${ARG_NAME}): bad entry '${entry}' (want name=path)")
    endif()
    # (Copied first: the MATCHES below resets CMAKE_MATCH_<n>.)
    set(path "${CMAKE_MATCH_2}")
    string(APPEND lines "${CMAKE_MATCH_1}=${path}\n")
    # npm's files are made by `npm ci`, which ${IOT_NPM_STAMP} (in DEPENDS) stands for.
    if(NOT (IOT_NPM_DIR AND path MATCHES "^${IOT_NPM_DIR}/"))
      list(APPEND deps ${path})
    endif()
  endforeach()
  file(MAKE_DIRECTORY ${out})
  file(CONFIGURE OUTPUT ${manifest} CONTENT "${lines}")
  add_custom_command(
    OUTPUT ${out}/${ARG_NAME}.cc ${out}/${ARG_NAME}.h
    COMMAND ${CMAKE_COMMAND} -DMANIFEST=${manifest} -DFUNCTION=${ARG_FUNCTION}
            -DOUT_CC=${out}/${ARG_NAME}.cc -DOUT_H=${out}/${ARG_NAME}.h -P ${IOT_EMBED_GEN}
    DEPENDS ${IOT_EMBED_GEN} ${manifest} ${deps} ${ARG_DEPENDS}
    COMMENT "Embedding ${ARG_NAME}"
    VERBATIM)
  add_library(${ARG_NAME} STATIC ${out}/${ARG_NAME}.cc)
  target_include_directories(${ARG_NAME} PUBLIC ${out})
  target_link_libraries(${ARG_NAME} PUBLIC iot_web)
endfunction()
