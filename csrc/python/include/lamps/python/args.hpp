#pragma once
// Arguments of the Python bindings, converted with errors that name them.
//
// pybind11 reports an argument of the wrong type as "incompatible function arguments" followed
// by the signature, naming nothing. A binding that takes the argument as Arg<T> receives any
// object and converts it with get("name"), which raises TypeError("context_tokens: expected a
// number, got str"). Signatures still show T's Python type. Conversion follows pybind11's own
// rules (an int is a valid float, a float is not a valid int); only the message differs.
// Shared by lamps._core and lamps._swap.
#include <pybind11/pybind11.h>

#include <cstddef>
#include <limits>
#include <typeindex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lamps::python {

namespace py = pybind11;

// An argument's name, or one element of it ("segments[2]"); rendered only for an error.
struct Name {
  const char* argument;
  std::ptrdiff_t index = -1;

  std::string str() const {
    return index < 0 ? argument : std::string(argument) + "[" + std::to_string(index) + "]";
  }
};

inline std::string type_name(py::handle value) { return Py_TYPE(value.ptr())->tp_name; }

[[noreturn]] inline void wrong_type(const Name& name, const std::string& expected,
                                    const std::string& got) {
  throw py::type_error(name.str() + ": expected " + expected + ", got " + got);
}

// How T converts from Python. The primary template covers classes and enums bound by pybind11.
template <typename T, typename = void>
struct Convert {
  static std::string expected() {
    if constexpr (std::is_enum_v<T>) {
      const py::handle type =
          py::detail::global_internals_native_enum_type_map_get_item(std::type_index(typeid(T)));
      return type ? py::str(type.attr("__name__")).cast<std::string>() : "an enum member";
    } else {
      return py::str(py::type::of<T>().attr("__name__")).cast<std::string>();
    }
  }

  // A bound class converts to a reference to the instance the Python object holds; it lives as
  // long as the argument does.
  static decltype(auto) from(py::handle value, const Name& name) {
    py::detail::make_caster<T> caster;
    if (value.is_none() || !caster.load(value, true)) wrong_type(name, expected(), type_name(value));
    if constexpr (std::is_enum_v<T>) {
      return T(py::detail::cast_op<T>(caster));  // by value: the caster holds it
    } else {
      return py::detail::cast_op<const T&>(caster);
    }
  }
};

// Numbers and bools.
template <typename T>
struct Convert<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static std::string expected() {
    if constexpr (std::is_same_v<T, bool>) return "a bool";
    if constexpr (std::is_floating_point_v<T>) return "a number";
    return std::is_signed_v<T> ? "an integer" : "a non-negative integer";
  }

  static T from(py::handle value, const Name& name) {
    py::detail::make_caster<T> caster;
    if (caster.load(value, true)) return py::detail::cast_op<T>(caster);
    // An int of the right kind that does not fit: say so rather than "got int".
    if (PyLong_Check(value.ptr()) && !PyBool_Check(value.ptr()) && !std::is_same_v<T, bool>) {
      if constexpr (std::is_floating_point_v<T>) {
        wrong_type(name, expected(), "an int too large for a float");
      } else {
        wrong_type(name, expected() + " in [" + std::to_string(std::numeric_limits<T>::min()) +
                             ", " + std::to_string(std::numeric_limits<T>::max()) + "]",
                   "int " + py::str(value).cast<std::string>());
      }
    }
    wrong_type(name, expected(), type_name(value));
  }
};

template <>
struct Convert<std::string> {
  static std::string expected() { return "a str"; }

  static std::string from(py::handle value, const Name& name) {
    if (!PyUnicode_Check(value.ptr())) wrong_type(name, expected(), type_name(value));
    return value.cast<std::string>();
  }
};

// None or a T.
template <typename T>
struct Convert<std::optional<T>> {
  static std::string expected() { return Convert<T>::expected() + " or None"; }

  static std::optional<T> from(py::handle value, const Name& name) {
    if (value.is_none()) return std::nullopt;
    return T(Convert<T>::from(value, name));
  }
};

// Any sequence but a str or bytes; a bad element is named by its index: "segments[2]: ...".
template <typename T>
struct Convert<std::vector<T>> {
  static std::string expected() {
    if constexpr (std::is_same_v<T, bool>) return "a sequence of bools";
    if constexpr (std::is_floating_point_v<T>) return "a sequence of numbers";
    if constexpr (std::is_integral_v<T>) return "a sequence of integers";
    return "a sequence of " + Convert<T>::expected();
  }

  static std::vector<T> from(py::handle value, const Name& name) {
    if (!PySequence_Check(value.ptr()) || PyUnicode_Check(value.ptr()) ||
        PyBytes_Check(value.ptr())) {
      wrong_type(name, expected(), type_name(value));
    }
    const auto items = py::reinterpret_borrow<py::sequence>(value);
    std::vector<T> out;
    out.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      const Name element{name.argument, static_cast<std::ptrdiff_t>(i)};
      out.push_back(T(Convert<T>::from(items[i], element)));
    }
    return out;
  }
};

// An argument taken as any object; get() converts it or raises TypeError naming it.
template <typename T>
class Arg {
 public:
  Arg() = default;
  explicit Arg(py::object value) : value_(std::move(value)) {}

  decltype(auto) get(const char* name) const { return Convert<T>::from(value_, Name{name}); }

 private:
  py::object value_;
};

}  // namespace lamps::python

namespace pybind11::detail {

// Loads any object into an Arg<T>, and names T's Python type in signatures.
template <typename T>
struct type_caster<lamps::python::Arg<T>> {
  PYBIND11_TYPE_CASTER(lamps::python::Arg<T>, make_caster<T>::name);

  bool load(handle src, bool) {
    value = lamps::python::Arg<T>(reinterpret_borrow<object>(src));
    return true;
  }

  static handle cast(const lamps::python::Arg<T>&, return_value_policy, handle) {
    pybind11_fail("lamps::python::Arg is an argument type only");
  }
};

}  // namespace pybind11::detail
