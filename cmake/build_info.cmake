# Writes lamps/_build_info.py: the commit a build's source tree is, and whether it had uncommitted
# changes, so that an installed package's results name what it was built from
# (lamps/replay/provenance.py reads it). A tree that is not the top of a git checkout (an sdist, a
# tarball, a directory inside some other project's repository) records None: unknown.
#
# CMakeLists.txt calls lamps_write_build_info() at configure time; the script also runs alone:
#   cmake -DLAMPS_SOURCE_DIR=<tree> -DLAMPS_BUILD_INFO=<file.py> -P cmake/build_info.cmake

function(lamps_write_build_info source_dir output)
  # The paths whose changes make a tree dirty: lamps/replay/provenance.py's WATCHED.
  set(watched lamps csrc cmake scripts pyproject.toml CMakeLists.txt)
  set(commit "None")
  set(dirty "None")
  set(changed "")
  find_package(Git QUIET)
  if(Git_FOUND)
    execute_process(
      COMMAND "${GIT_EXECUTABLE}" -C "${source_dir}" rev-parse --show-toplevel HEAD
      RESULT_VARIABLE head_rc OUTPUT_VARIABLE head_out ERROR_QUIET
      OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(head_rc EQUAL 0)
      string(REPLACE "\n" ";" head_out "${head_out}")
      list(GET head_out 0 top)
      list(GET head_out 1 head)
      get_filename_component(top "${top}" REALPATH)
      get_filename_component(source "${source_dir}" REALPATH)
      # Only this tree's own repository names its commit, never one that merely contains it.
      if(top STREQUAL source)
        execute_process(
          COMMAND "${GIT_EXECUTABLE}" -C "${source_dir}" status --porcelain
                  --untracked-files=all -- ${watched}
          RESULT_VARIABLE status_rc OUTPUT_VARIABLE status_out ERROR_QUIET
          OUTPUT_STRIP_TRAILING_WHITESPACE)
        if(status_rc EQUAL 0)
          set(commit "\"${head}\"")
          set(dirty "False")
          if(NOT status_out STREQUAL "")
            set(dirty "True")
            string(REPLACE "\n" ";" lines "${status_out}")
            foreach(line IN LISTS lines)
              string(SUBSTRING "${line}" 3 -1 path)
              string(REPLACE "\\" "\\\\" path "${path}")
              string(REPLACE "\"" "\\\"" path "${path}")
              string(APPEND changed "\"${path}\", ")
            endforeach()
          endif()
        endif()
      endif()
    endif()
  endif()
  file(WRITE "${output}" "\"\"\"What this package was built from (written by cmake/build_info.cmake).\"\"\"

COMMIT: str | None = ${commit}
DIRTY: bool | None = ${dirty}
CHANGED: tuple[str, ...] = (${changed})
")
  string(REPLACE "\"" "" shown "${commit}")
  message(STATUS "lamps build info: commit ${shown}, dirty ${dirty}")
endfunction()

if(CMAKE_SCRIPT_MODE_FILE)
  lamps_write_build_info("${LAMPS_SOURCE_DIR}" "${LAMPS_BUILD_INFO}")
endif()
