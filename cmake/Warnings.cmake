# Picky warnings, after nghttp2's cmake/PickyWarningsC.cmake; -Werror behind PTC_WERROR.
include(CheckCCompilerFlag)
set(PTC_WARNING_FLAGS
  -Wall -Wextra -Wconversion -Wsign-conversion -Wshadow -Wmissing-prototypes -Wstrict-prototypes
  -Wvla -Wformat=2 -Wformat-security -Wmissing-field-initializers -Wunreachable-code
  -Wpointer-arith -Wcast-qual -Wundef -Wwrite-strings
  -Werror=implicit-function-declaration -Werror=incompatible-pointer-types)
set(PTC_SUPPORTED_WARNINGS "")
foreach(flag IN LISTS PTC_WARNING_FLAGS)
  string(MAKE_C_IDENTIFIER "HAVE_CFLAG${flag}" var)
  check_c_compiler_flag(${flag} ${var})
  if(${var})
    list(APPEND PTC_SUPPORTED_WARNINGS ${flag})
  endif()
endforeach()
function(ptc_warnings target)
  target_compile_options(${target} PRIVATE ${PTC_SUPPORTED_WARNINGS})
  if(PTC_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
