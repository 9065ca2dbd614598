#pragma once
// NumPy array arguments of the Python bindings, used in place. Never converted: a converted copy
// would be read where the caller did not write, or (for an output) written where the caller
// never looks. Anything else is a TypeError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace lamps::python {

namespace py = pybind11;

// A 1-D, C-contiguous NumPy array of exactly dtype T.
template <typename T>
py::array array_column(py::handle value, const char* field) {
  const std::string dtype = py::str(py::dtype::of<T>()).cast<std::string>();
  if (!py::isinstance<py::array>(value)) {
    throw py::type_error(std::string(field) + " must be a numpy array of dtype " + dtype +
                         " (got " + Py_TYPE(value.ptr())->tp_name + ")");
  }
  auto array = py::reinterpret_borrow<py::array>(value);
  if (!array.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(field) + " must be a numpy array of dtype " + dtype +
                         " (got " + py::str(array.dtype()).cast<std::string>() + ")");
  }
  if (array.ndim() != 1 || !(array.flags() & py::array::c_style)) {
    throw py::type_error(std::string(field) + " must be a 1-D C-contiguous array");
  }
  return array;
}

// An input column of exactly `length` elements, read in place (a wrong length: ValueError).
template <typename T>
const T* column(py::handle value, const char* field, py::ssize_t length) {
  const py::array array = array_column<T>(value, field);
  if (array.shape(0) != length) {
    throw std::invalid_argument(std::string(field) + " must have length " +
                                std::to_string(length) + " (got " + std::to_string(array.shape(0)) +
                                ")");
  }
  return static_cast<const T*>(array.data());
}

// An output column, written in place: also writeable and exactly `length` long, else TypeError,
// since no other array could be written back.
template <typename T>
T* out_column(py::handle value, const char* field, py::ssize_t length) {
  py::array array = array_column<T>(value, field);
  if (array.shape(0) != length) {
    throw py::type_error(std::string(field) + " must have length " + std::to_string(length) +
                         " (got " + std::to_string(array.shape(0)) + ")");
  }
  if (!array.writeable()) throw py::type_error(std::string(field) + " must be writeable");
  return static_cast<T*>(array.mutable_data());
}

}  // namespace lamps::python
