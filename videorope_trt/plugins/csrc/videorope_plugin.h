// TensorRT IPluginV3 for the VideoRope op: name "VideoRope", version "1", namespace "videorope".
// The same source compiles unchanged against the TensorRT 10.3, 10.13 and 11.x headers (and TensorRT-RTX).
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace videorope
{

//! The op's attributes, as the creator's declared fields (videorope_trt/rope/contract.py: VIDEO_ROPE.fields).
struct RopeAttrs
{
    int32_t interleaved{0};
    int32_t layout{0};
    float scale{1.0F};
};

class VideoRopePlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit VideoRopePlugin(RopeAttrs const& attrs);
    ~VideoRopePlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    RopeAttrs mAttrs;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class VideoRopeCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    VideoRopeCreator();
    ~VideoRopeCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

//! Parses a field collection into attributes; returns an empty string or the reason it is invalid.
std::string parseFields(nvinfer1::PluginFieldCollection const* fc, RopeAttrs& attrs);

// ---- shared with the VideoRopeCache plugin (videorope_cache_plugin.cpp)

constexpr int32_t kMaxAxes = 4;

//! Reports an error through the logger TensorRT handed to setLoggerFinder (stderr before it did).
void logPluginError(char const* plugin, std::string const& msg);

//! "(d0, d1, ...)".
std::string dims(nvinfer1::Dims const& d);

//! The VideoRope shape rules for x, positions, inv_freq, axis_map; -1 (unknown at build time) matches anything.
//! Empty string when valid, else the reason.
std::string checkShapes(nvinfer1::Dims const& x, nvinfer1::Dims const& pos, nvinfer1::Dims const& freq,
    nvinfer1::Dims const& map, int32_t layout);

//! The kernel's VideoRopeDType of a TensorRT type, -1 for one the kernels do not take.
int32_t dtypeCode(nvinfer1::DataType t);

//! The creator's declared fields (attrs null) or a plugin's fields pointing into its attributes.
std::vector<nvinfer1::PluginField> declaredFields(RopeAttrs const* attrs);

} // namespace videorope
